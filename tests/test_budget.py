"""The memory budget: batches are sized in bytes (flat in the dictionary width), encode keeps
its codes between passes and spills them beside the output beyond the budget, with the same
bytes as in memory and nothing left behind."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from conftest import make_sae
from mdlsae import MdlsaeError, codec
from mdlsae.budget import parse_bytes, rows_for
from mdlsae.cli import main
from mdlsae.codec.container import MdlFile
from mdlsae.measure import dl as dl_mod
from mdlsae.measure.store import CodeStore


def test_parse_and_rows():
    assert parse_bytes("2G") == 2 << 30 and parse_bytes("768m") == 768 << 20 and parse_bytes("1.5GiB") == 3 << 29
    for bad in ("lots", "-1G", "1M"):  # the last is below the 16 MiB floor
        with pytest.raises(MdlsaeError, match="memory budget"):
            parse_bytes(bad)
    # rows per batch fall as the width grows: the dense bytes per batch stay the same
    assert [rows_for(4 * d, budget=64 << 20) for d in (16_384, 65_536, 262_144)] == [1024, 256, 64]


def test_batches_follow_the_budget(monkeypatch, toy):
    sae = make_sae("topk")
    seen = []
    monkeypatch.setenv("MDLSAE_MEMORY", "16M")
    real = dl_mod.select_quantize

    def spy(pre, **kw):
        seen.append(pre.shape[0])
        return real(pre, **kw)

    monkeypatch.setattr(dl_mod, "select_quantize", spy)
    dl_mod.scan(toy.x, sae, 0.1)
    assert seen[0] == min(len(toy.x), (16 << 20) // sae.row_bytes())


def test_spilled_codes_give_the_same_file_and_leave_nothing(monkeypatch, tmp_path, toy):
    sae = make_sae("topk")
    codec.encode(toy.x, sae, tmp_path / "mem.mdl", step=0.1, chunk_rows=500)
    spilled = []
    real_append = CodeStore.append

    def append(self, codes):
        real_append(self, codes)
        spilled.append(self.spilled_bytes)

    monkeypatch.setattr(CodeStore, "append", append)
    monkeypatch.setattr(codec.api, "budget_bytes", lambda: 40_000)  # 20 kB of codes in memory, tiny batches
    (tmp_path / "out").mkdir()
    codec.encode(toy.x, sae, tmp_path / "out" / "spill.mdl", step=0.1, chunk_rows=500)
    assert spilled[-1] > 0 and len(spilled) > 10  # many batches, most codes spilled
    with MdlFile(tmp_path / "out" / "spill.mdl") as a, MdlFile(tmp_path / "mem.mdl") as b:  # all but the date
        assert len(a.chunks) == len(b.chunks) > 1
        assert all(a.read_chunk(i) == b.read_chunk(i) for i in range(len(a.chunks)))
        assert {k: v for k, v in a.meta.items() if k != "created"} == {k: v for k, v in b.meta.items() if k != "created"}
    assert os.listdir(tmp_path / "out") == ["spill.mdl"]  # the spill file is gone
    bad = toy.x.copy()
    bad[-1, 0] = np.nan  # fails at the end of the first pass
    with pytest.raises(MdlsaeError, match="must be finite"):
        codec.encode(bad, sae, tmp_path / "out" / "bad.mdl", step=0.1, chunk_rows=500)
    assert os.listdir(tmp_path / "out") == ["spill.mdl"]


def test_memory_flag(monkeypatch, capsys, tmp_path, toy_npy, sae_dir):
    monkeypatch.setenv("MDLSAE_MEMORY", "512M")  # restored after the test: --memory sets it
    args = ["dl", str(toy_npy), "--sae", str(sae_dir), "--step", "0.1", "--json"]
    assert main(args) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(args + ["--memory", "16M"]) == 0
    assert json.loads(capsys.readouterr().out) == ref
    with pytest.raises(SystemExit):
        main(args + ["--memory", "a lot"])
    assert "memory budget must look like" in capsys.readouterr().err
