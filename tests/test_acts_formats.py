"""Activation containers (issue 11): every container gives `mdlsae dl` the same rows, hence the
same DL, as the same rows in a float32 .npy; a file holding several tensors needs --key."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.data.acts import Activations


def dl_json(capsys, path, sae_dir, *extra):
    code = main([str(a) for a in ("dl", path, "--sae", sae_dir, "--step", 0.1, "--json", *extra)])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def containers(tmp_path, x):
    """(file, extra CLI args) holding exactly the rows of ``x`` [3000, 16]."""
    ids = np.arange(len(x), dtype=np.int64)
    cube = x.reshape(30, 100, 16)  # [batch, seq, d]
    np.save(tmp_path / "f64.npy", x.astype(np.float64))
    np.save(tmp_path / "cube.npy", cube)
    np.savez(tmp_path / "one.npz", x)
    np.savez_compressed(tmp_path / "two.npz", acts=x, other=x[:, :8])
    torch.save(torch.from_numpy(x), tmp_path / "t.pt")
    torch.save({"acts": torch.from_numpy(cube), "tokens": torch.from_numpy(ids)}, tmp_path / "d.pt")
    save_file({"acts": x, "token_ids": ids}, str(tmp_path / "with_ids.safetensors"))
    save_file({"a": cube, "b": cube[:, :, :8].copy()}, str(tmp_path / "cube.safetensors"))
    return [("f64.npy", []), ("cube.npy", []), ("one.npz", []), ("two.npz", ["--key", "acts"]),
            ("t.pt", []), ("d.pt", []), ("with_ids.safetensors", []), ("cube.safetensors", ["--key", "a"])]


def test_every_container_gives_the_npy_dl(capsys, tmp_path, toy, toy_npy, sae_dir):
    x = toy.x.astype(np.float32)
    ref = dl_json(capsys, toy_npy, sae_dir)
    for name, extra in containers(tmp_path, x):
        got = dl_json(capsys, tmp_path / name, sae_dir, *extra)
        assert got["n_rows"] == ref["n_rows"] == len(x), name
        for key in ("dl_bits_per_row", "l0", "mse", "fvu"):
            assert got[key] == ref[key], (name, key)


def test_rows_of_a_cube_cross_slice_boundaries(tmp_path, toy):
    cube = toy.x.astype(np.float32).reshape(30, 100, 16)
    save_file({"a": cube}, str(tmp_path / "c.safetensors"))
    acts = Activations(tmp_path / "c.safetensors")
    assert (acts.n_rows, acts.d) == (3000, 16)
    assert torch.equal(torch.cat(list(acts.batches(37))), torch.from_numpy(cube.reshape(-1, 16)))
    assert torch.equal(acts.rows(150, 251), torch.from_numpy(cube.reshape(-1, 16)[150:251]))


def test_several_tensors_need_a_key(tmp_path, toy):
    x = toy.x.astype(np.float32)
    np.savez(tmp_path / "two.npz", a=x, b=x)
    torch.save({"a": torch.from_numpy(x), "b": torch.from_numpy(x)}, tmp_path / "two.pt")
    for name in ("two.npz", "two.pt"):
        with pytest.raises(MdlsaeError, match="holds 2 tensors.*--key"):
            Activations(tmp_path / name)
        with pytest.raises(MdlsaeError, match="no tensor 'c'"):
            Activations(tmp_path / name, key="c")
        assert Activations(tmp_path / name, key="b").n_rows == len(x)
    with pytest.raises(MdlsaeError, match="is a directory"):
        Activations(tmp_path)
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(MdlsaeError, match="expected a tensor, found list"):
        Activations(tmp_path / "list.pt")
