"""The package's layers (pyproject.toml [tool.importlinter]) hold in the source tree, and the
contract really fails, with a readable message, when a lower layer imports a higher one."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def lint(src: Path) -> subprocess.CompletedProcess:
    """lint-imports over the package under ``src`` (the source tree, not the installed copy)."""
    lint_imports = shutil.which("lint-imports")
    assert lint_imports, "import-linter is part of the test extra: pip install '.[test]'"
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([lint_imports, str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=src, env=env, capture_output=True, text=True, timeout=120)


def test_layers_contract_is_kept():
    r = lint(ROOT / "python")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "mdlsae layers KEPT" in r.stdout


@pytest.mark.parametrize("module, upward", [
    ("measure/entropy.py", "from ..codec import container"),  # measurement importing the codec
    ("selection/allocate.py", "from ..codec import api"),  # siblings are independent
    ("data/toy.py", "from ..models import sae"),  # the lazy import that used to be here
])
def test_upward_import_breaks_the_contract(tmp_path, module, upward):
    shutil.copytree(ROOT / "python" / "mdlsae", tmp_path / "mdlsae",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    target = tmp_path / "mdlsae" / module
    target.write_text(target.read_text() + f"\n\ndef _upward():\n    {upward}\n")
    r = lint(tmp_path)
    assert r.returncode != 0
    assert "mdlsae layers BROKEN" in r.stdout
    low, high = module.split("/")[0], upward.split()[1].lstrip(".")
    assert f"mdlsae.{low} is not allowed to import mdlsae.{high}" in r.stdout, r.stdout
