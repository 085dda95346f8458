"""Hostile .mdl files: the reader's own validation, not the checksums, against crafted input.
Every header field is checked for presence, type and range; declared sizes are bounded by the
bytes that back them; CRC-resealed mutations of every section give an MdlsaeError or a clean
decode, never another exception, a crash or a hang."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from conftest import make_sae
from mdlsae import MdlsaeError
from mdlsae._native import _C
from mdlsae.codec import decode, encode, inspect
from mdlsae.codec.container import _FIELDS
from mdlsae.data import make_toy
from reseal import Layout, decode_all, mutate, reseal


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    x = torch.from_numpy(make_toy(n_rows=600, d=16, n_features=48, mean_active=3, seed=2).x)
    sae = make_sae("topk")
    parents = np.full(sae.d_sae, -1)
    parents[1::2] = np.arange(0, sae.d_sae - 1, 2)
    steps = np.linspace(0.05, 0.2, sae.d_sae).astype(np.float32)
    encode(x, sae, tmp / "a.mdl", step=steps, parents=parents, chunk_rows=128, features_per_stream=8)
    return tmp / "a.mdl"


def test_reseal_of_an_untouched_file_is_the_file(good):
    data = good.read_bytes()
    assert reseal(data) == data
    assert Layout(data).with_meta(Layout(data).meta) == data


@pytest.mark.parametrize("field", sorted(_FIELDS))
def test_every_header_field_is_required_and_checked(good, tmp_path, field):
    lay = Layout(good.read_bytes())
    meta = dict(lay.meta)
    del meta[field]
    (tmp_path / "m.mdl").write_bytes(reseal(lay.with_meta(meta)))
    with pytest.raises(MdlsaeError, match=f"header field '{field}' is missing"):
        inspect(tmp_path / "m.mdl")
    meta[field] = [1]  # a JSON list is valid for no field
    (tmp_path / "t.mdl").write_bytes(reseal(lay.with_meta(meta)))
    with pytest.raises(MdlsaeError, match=f"header field '{field}' is \\[1\\], expected"):
        inspect(tmp_path / "t.mdl")


def test_declared_sizes_are_bounded_by_the_file(good, tmp_path):
    lay = Layout(good.read_bytes())
    cases = {"d_sae": (2**29, "needs more than the"), "n_rows": (2**60, "needs an index of"),
             "chunk_rows": (_C.MAX_CHUNK_ROWS + 1, "expected an integer in")}
    for field, (value, message) in cases.items():
        meta = dict(lay.meta, **{field: value})
        (tmp_path / "s.mdl").write_bytes(reseal(lay.with_meta(meta)))
        t = time.perf_counter()
        with pytest.raises(MdlsaeError, match=message):
            decode(tmp_path / "s.mdl")
        assert time.perf_counter() - t < 1.0


def test_step_fields_must_agree(good, tmp_path):
    lay = Layout(good.read_bytes())
    (tmp_path / "s.mdl").write_bytes(reseal(lay.with_meta(dict(lay.meta, step=0.1))))
    with pytest.raises(MdlsaeError, match="'step' and 'per_feature_steps' disagree"):
        inspect(tmp_path / "s.mdl")


def test_a_deep_forest_is_read_in_linear_time():
    # A chain of 200,000 parents: a walk up from every feature would take 2e10 steps.
    d = 200_000
    parent = np.arange(-1, d - 1, dtype=np.int32)
    z64, z32 = np.zeros(d, np.int64), np.zeros(d, np.int32)
    t = time.perf_counter()
    model = _C.Model(10, parent, z64, z64, z32, z32, np.zeros(d + 1, np.int64), np.zeros(0, np.int32),
                     np.zeros(0, np.int64))
    assert model.d_sae == d and time.perf_counter() - t < 2.0
    cycle = parent.copy()
    cycle[0] = d - 1
    with pytest.raises(RuntimeError, match="do not form a forest"):
        _C.Model(10, cycle, z64, z64, z32, z32, np.zeros(d + 1, np.int64), np.zeros(0, np.int32),
                 np.zeros(0, np.int64))


def test_resealed_mutations_give_mdlsae_error_or_decode(good, tmp_path):
    lay = Layout(good.read_bytes())
    rng = np.random.default_rng(17)
    paths, what = [], []
    for i in range(300):
        desc, data = mutate(lay, rng)
        paths.append(tmp_path / f"m{i}.mdl")
        paths[-1].write_bytes(data)
        what.append(desc)
    results = decode_all(paths, timeout=10.0)
    bad = [(w, r) for w, r in zip(what, results) if r not in ("ok", "error")]
    assert not bad, bad[:10]
    assert results.count("error") > 200  # nearly every mutation is caught by the reader's own checks


def test_the_runner_tells_crashes_and_hangs(tmp_path, monkeypatch):
    import reseal

    monkeypatch.setattr(reseal, "_CHILD", r"""
import os, sys, time
print("ready", flush=True)
for line in sys.stdin:
    i, path = line.rstrip("\n").split("\t")
    print("start", i, flush=True)
    kind = open(path).read()
    if kind == "crash":
        os.abort()
    if kind == "hang":
        time.sleep(60)
    print(kind, i, flush=True)
""")
    kinds = ["ok", "crash", "error", "hang", "ok"]
    paths = []
    for i, k in enumerate(kinds):
        paths.append(tmp_path / f"{i}")
        paths[-1].write_text(k)
    assert decode_all(paths, timeout=2.0) == kinds
