"""Activation containers (issue 11): every container gives `mdlsae dl` the same rows, hence the
same DL, as the same rows in a float32 .npy; a file holding several tensors needs --key."""

from __future__ import annotations

import json
from pathlib import Path

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
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(MdlsaeError, match="expected a tensor, found list"):
        Activations(tmp_path / "list.pt")


# ------------------------------------------------------------ sharded datasets
SAELENS_CACHE = Path(__file__).parent / "fixtures" / "acts_formats" / "acts_saelens6_cached"


def write_shards(folder, x, kind, sizes=(700, 1300, 1000)):
    """``x`` split into shards named so that natural order differs from plain string order."""
    folder.mkdir()
    bounds = np.cumsum((0,) + sizes)
    for i, (lo, hi) in enumerate(zip(bounds, bounds[1:])):
        name = folder / f"shard_{[2, 10, 33][i]}{kind}"
        part = x[lo:hi]
        if kind == ".npy":
            np.save(name, part)
        elif kind == ".safetensors":
            save_file({"acts": part, "ids": np.arange(len(part))}, str(name))
        else:
            torch.save(torch.from_numpy(part), name)
    return folder


@pytest.mark.parametrize("kind", [".npy", ".safetensors", ".pt"])
def test_directory_and_glob_of_shards_give_the_npy_dl(capsys, tmp_path, toy, toy_npy, sae_dir, kind):
    x = toy.x.astype(np.float32)
    folder = write_shards(tmp_path / "shards", x, kind)
    ref = dl_json(capsys, toy_npy, sae_dir)
    for spec in (folder, f"{folder}/shard_*{kind}"):
        acts = Activations(spec)
        assert torch.equal(acts.rows(0, acts.n_rows), torch.from_numpy(x))  # natural order: 2, 10, 33
        assert torch.equal(acts.rows(650, 2100), torch.from_numpy(x[650:2100]))  # across two boundaries
        got = dl_json(capsys, spec, sae_dir)
        for key in ("n_rows", "dl_bits_per_row", "l0", "mse", "fvu"):
            assert got[key] == ref[key], (spec, key)


def test_saelens_activation_cache_reads_directly(capsys, tmp_path, sae_dir):
    """The datasets folder SAELens 6.54.12's CacheActivationsRunner wrote (fixture): one column
    per hook, [context, d] per dataset row, two Arrow shards."""
    from safetensors.torch import load_file

    rows = load_file(str(SAELENS_CACHE / "expected.safetensors"))["acts"].reshape(-1, 16)
    acts = Activations(SAELENS_CACHE / "cached_activations")
    assert (acts.n_rows, acts.d) == (64, 16)
    assert torch.equal(acts.rows(0, 64), rows) and torch.equal(acts.rows(30, 41), rows[30:41])
    assert torch.equal(Activations(SAELENS_CACHE / "cached_activations", key="blocks.3.hook_resid_post").rows(0, 64), rows)
    with pytest.raises(MdlsaeError, match="not floating-point rows|holds scalars"):
        Activations(SAELENS_CACHE / "cached_activations", key="token_ids")
    np.save(tmp_path / "same.npy", rows.numpy())
    ref = dl_json(capsys, tmp_path / "same.npy", sae_dir)
    got = dl_json(capsys, SAELENS_CACHE / "cached_activations", sae_dir)
    assert got == ref  # every figure, DL, MSE and FVU included


def test_shard_errors_name_the_file(tmp_path, toy):
    x = toy.x.astype(np.float32)
    folder = write_shards(tmp_path / "s", x, ".npy")
    np.save(folder / "shard_40.npy", x[:10, :8])
    with pytest.raises(MdlsaeError, match="shard_40.npy: shard has d_in=8, the first shard d_in=16"):
        Activations(folder)
    np.save(folder / "shard_40.npy", x[:10].astype(np.float16))
    with pytest.raises(MdlsaeError, match="shard_40.npy: shard dtype float16"):
        Activations(folder)
    (folder / "shard_40.npy").unlink()
    torch.save(torch.from_numpy(x[:5]), folder / "shard_41.pt")
    with pytest.raises(MdlsaeError, match="several kinds"):
        Activations(folder)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MdlsaeError, match="holding no activation shards"):
        Activations(tmp_path / "empty")
    with pytest.raises(MdlsaeError, match="no files match"):
        Activations(str(tmp_path / "nothing_*.npy"))
