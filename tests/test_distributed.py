"""torch.distributed (gloo on CPU), for real: ``torchrun`` starts 1, 2 and 3 processes that run
encode (of a .npy; of SAELens's datasets cache, 2 chunks for 3 ranks, so one rank has no rows; of
a shard folder to a sharded output; with automatic chunks, which every rank sizes from the same
first rows), dl, parents and select, and every result must equal one
plain process's: the .mdl files byte for byte, the DL bit for bit. A rank killed mid-run leaves
no file behind, and an error on one rank is reported with its rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PACKAGE_PATH
from mdlsae import cli, distributed
from mdlsae.data import make_toy

from conftest import make_sae

pytestmark = pytest.mark.skipif(not distributed.torch.distributed.is_available(),
                                reason="this torch has no torch.distributed")

ROOT = Path(__file__).resolve().parents[1]
ENV = {"SOURCE_DATE_EPOCH": "1700000000", "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    x = make_toy(n_rows=5000, d=16, n_features=48, mean_active=3, seed=3).x
    np.save(d / "acts.npy", x)
    (d / "shards").mkdir()
    for i, (a, b) in enumerate(zip(SHARD_CUTS, SHARD_CUTS[1:])):
        np.save(d / "shards" / f"part_{i}.npy", x[a:b])
    make_sae("topk").save(d / "sae")
    from safetensors.torch import load_file

    rows = load_file(str(SAELENS_CACHE / "expected.safetensors"))["acts"]
    np.save(d / "cache_rows.npy", rows.reshape(-1, 16).numpy())
    return d


SHARD_CUTS = [0, 1200, 1200, 2600, 4100, 5000]  # 5 shard files (one empty) for --sharded
SAELENS_CACHE = ROOT / "tests" / "fixtures" / "acts_formats" / "acts_saelens6_cached"


def commands(d: Path, out: Path, cache: str | Path = SAELENS_CACHE / "cached_activations") -> list[list[str]]:
    """The commands compared; ``cache`` is SAELens's datasets cache (under torchrun) or a .npy
    of the same rows (the one-process reference)."""
    acts, sae = str(d / "acts.npy"), ["--sae", str(d / "sae")]
    return [["encode", str(cache), *sae, "--step", "0.1", "--chunk-rows", "32", "-o", str(out / "c.mdl"), "--json"],
            ["encode", acts, *sae, "--step", "0.1", "--chunk-rows", "512", "-o", str(out / "a.mdl"), "--json"],
            ["encode", acts, *sae, "--step", "0.1", "--chunk-rows", "700", "--parents", "auto",
             "-o", str(out / "p.mdl"), "--json"],
            ["dl", acts, *sae, "--step", "0.1", "--json"],
            ["parents", acts, *sae, "--step", "0.1", "--fit", "0.6", "-o", str(out / "parents.npy"), "--json"],
            ["select", acts, "--sae", str(d / "sae"), "--tolerance", "0.2", "--per-feature", "--json"],
            ["encode", str(d / "shards"), *sae, "--step", "0.1", "--chunk-rows", "512", "--sharded",
             "-o", str(out / "s.mdl"), "--json"],
            ["encode", acts, *sae, "--step", "0.1", "-o", str(out / "auto.mdl"), "--json"],  # automatic chunks
            ["encode", str(d / "shards"), *sae, "--step", "0.1", "--sharded", "-o", str(out / "s2.mdl"), "--json"]]


def torchrun(n: int, plan: dict, tmp: Path, script: str = "tests/dist_worker.py") -> subprocess.CompletedProcess:
    (tmp / "plan.json").write_text(json.dumps(plan))
    env = {**os.environ, **ENV, "PYTHONPATH": os.pathsep.join([PACKAGE_PATH, str(ROOT / "tests")])}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n),
                           "--standalone", str(ROOT / script), str(tmp / "plan.json")],
                          env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def single(data, tmp_path_factory):
    """The results of one plain process (no process group)."""
    out = tmp_path_factory.mktemp("one")
    old = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    try:
        results = []
        for argv in commands(data, out, cache=data / "cache_rows.npy"):
            import contextlib
            import io

            buf = io.StringIO()
            with contextlib.redirect_stdout(buf):
                assert cli.main(argv) == 0
            results.append(json.loads(buf.getvalue()))
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return out, results


LOSSES = ("loss", "mse", "fvu")  # float sums: their last digits move with the order (and torch's threads)


def assert_same(a, b, where: str = "") -> None:
    """Equal, except that losses need only agree to 1e-12 (every count-based figure exactly)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k in LOSSES and isinstance(a[k], float):
                assert a[k] == pytest.approx(b[k], rel=1e-12), f"{where}.{k}"
            else:
                assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_same_bytes_and_dl_on_any_number_of_ranks(data, single, tmp_path, ranks):
    one, ref = single
    out = tmp_path / "out"
    out.mkdir()
    r = torchrun(ranks, {"commands": commands(data, out), "out": str(out)}, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    got = [json.loads((out / f"{i}.out").read_text()) for i in range(len(ref))]
    for name in ("c.mdl", "a.mdl", "p.mdl", "auto.mdl", "parents.npy",
                 *(f"{s}/shard_{i:05d}.mdl" for s in ("s.mdl", "s2.mdl") for i in range(5)), "s.mdl/manifest.json",
                 "s2.mdl/manifest.json"):
        assert (out / name).read_bytes() == (one / name).read_bytes(), name
    assert got[6] == ref[6] and got[6]["shards"] == 5
    assert got[:3] == ref[:3]  # inspect of byte-identical files
    assert got[0]["n_rows"] == 64 and got[2]["forest"]["edges"] > 0  # pair counts summed, not one rank's
    assert got[3]["dl_bits"] == ref[3]["dl_bits"]
    assert_same(got[3], ref[3])
    assert_same({**got[4], "output": None}, {**ref[4], "output": None})
    assert_same(got[5], ref[5])
    assert sorted(p.name for p in out.iterdir() if p.suffix != ".out") == ["a.mdl", "auto.mdl", "c.mdl", "p.mdl", "parents.npy",
                                                                            "s.mdl", "s2.mdl"]


@pytest.mark.parametrize("at", ["scan", "write"])
def test_killed_rank_leaves_nothing(data, tmp_path, at):
    out = tmp_path / "out"
    out.mkdir()
    plan = {"commands": commands(data, out)[1:2], "out": str(out), "kill": {"rank": 1, "at": at}}
    r = torchrun(2, plan, tmp_path)
    assert r.returncode != 0
    # no .mdl, no temporary file, no spilled codes (rank 0 may still have saved its empty stdout, or
    # been stopped by torchrun first: which comes first is a race)
    assert [p.name for p in out.iterdir() if p.suffix != ".out"] == []


def test_error_on_one_rank_names_it(data, tmp_path):
    x = np.load(data / "acts.npy")
    x[4000, 3] = np.nan  # in rank 1's rows
    np.save(tmp_path / "nan.npy", x)
    out = tmp_path / "out"
    out.mkdir()
    argv = ["encode", str(tmp_path / "nan.npy"), "--sae", str(data / "sae"), "--step", "0.1", "--chunk-rows", "512",
            "-o", str(out / "a.mdl")]  # (automatic chunks would have every rank code the first rows up front)
    r = torchrun(2, {"commands": [argv], "out": str(out)}, tmp_path)
    assert r.returncode != 0
    assert "mdlsae: error: rank 1: " in r.stderr and "row 4000, column 3 is nan" in r.stderr
    assert "mdlsae: error: rank 0: the measuring pass stopped: rank 1 failed" in r.stderr
    assert [p.name for p in out.iterdir() if p.suffix != ".out"] == []


def test_distributed_flag_without_torchrun_is_a_clear_error(capsys, data, tmp_path):
    env = {k: os.environ.pop(k) for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k in os.environ}
    try:
        rc = cli.main(["dl", str(data / "acts.npy"), "--sae", str(data / "sae"), "--step", "0.1", "--distributed"])
    finally:
        os.environ.update(env)
    assert rc == 1
    assert "--distributed needs the environment torchrun sets" in capsys.readouterr().err


def test_shares_cover_the_rows_on_chunk_boundaries():
    for n, align, w in [(5000, 512, 3), (10, 4, 2), (3, 512, 3), (0, 7, 2), (16384, 16384, 4)]:
        shares = [distributed.share(n, align, r, w) for r in range(w)]
        assert shares[0][0] == 0 and shares[-1][1] == n
        assert all(a[1] == b[0] for a, b in zip(shares, shares[1:]))
        assert all(s[0] % align == 0 and s[0] <= s[1] for s in shares)
