"""The ``mdlsae`` CLI: ``dl`` agrees with an independent numpy computation of DESIGN §2, and
bad input gives one clear error line and a non-zero exit code, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import save_file

from conftest import make_sae
from mdlsae.cli import main


def numpy_dl(x: np.ndarray, sae, step: float) -> dict:
    """DESIGN §2 written out in numpy, independent of the package's code paths."""
    W_enc, b_enc = sae.W_enc.detach().numpy(), sae.b_enc.detach().numpy()
    W_dec, b_dec = sae.W_dec.detach().numpy(), sae.b_dec.detach().numpy()
    pre = (x - b_dec) @ W_enc + b_enc
    keep = np.zeros_like(pre, dtype=bool)
    top = np.argsort(-pre, axis=1, kind="stable")[:, : sae.cfg.k]
    np.put_along_axis(keep, top, True, axis=1)
    z = np.where(keep, np.maximum(pre, 0), 0).astype(np.float32)
    q = np.rint(z / np.float32(step))
    n, d = q.shape
    bits = 0.0
    for i in range(d):
        act = q[:, i] >= 1
        p = act.mean()
        if 0 < p < 1:
            bits += -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
        if act.any():
            _, c = np.unique(q[act, i], return_counts=True)
            bits += p * -(c / c.sum() * np.log2(c / c.sum())).sum()
    recon = (q * np.float32(step)) @ W_dec + b_dec
    err = ((x.astype(np.float64) - recon) ** 2).sum()
    return {"dl_bits_per_row": bits, "l0": (q >= 1).sum() / n, "mse": err / x.size,
            "fvu": err / ((x - x.mean(0)) ** 2).sum()}


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("step", [0.02, 0.1, 0.5])
def test_dl_json_matches_numpy(capsys, tmp_path, toy_npy, toy, step):
    sae = make_sae("topk", d_in=16, d_sae=48, k=4)
    sae.save(tmp_path / "sae")
    code, out, err = run_cli(capsys, "dl", toy_npy, "--sae", tmp_path / "sae", "--step", step, "--json")
    assert code == 0, err
    got = json.loads(out)
    want = numpy_dl(toy.x, sae, step)
    assert (got["n_rows"], got["d_in"], got["d_sae"]) == (3000, 16, 48)
    for key, v in want.items():
        assert got[key] == pytest.approx(v, rel=1e-3), key
    assert got["naive_bits_per_row"] >= got["dl_bits_per_row"]


def test_dl_table_and_safetensors_and_float16(capsys, tmp_path, toy, sae_dir):
    save_file({"acts": toy.x.astype(np.float16)}, str(tmp_path / "a.safetensors"))
    np.save(tmp_path / "a16.npy", toy.x.astype(np.float16))
    outs = []
    for f in ("a.safetensors", "a16.npy"):
        code, out, err = run_cli(capsys, "dl", tmp_path / f, "--sae", sae_dir, "--step", 0.1, "--json")
        assert code == 0, err
        outs.append(json.loads(out))
    assert outs[0]["dl_bits_per_row"] == outs[1]["dl_bits_per_row"]
    code, out, _ = run_cli(capsys, "dl", tmp_path / "a16.npy", "--sae", sae_dir, "--step", 0.1)
    assert code == 0 and "DL estimate" in out and "raw float16" in out


def test_dl_with_parents(capsys, tmp_path, toy_npy, sae_dir):
    parents = np.full(48, -1, dtype=np.int64)
    parents[10:20] = np.arange(10)
    np.save(tmp_path / "p.npy", parents)
    code, out, err = run_cli(capsys, "dl", toy_npy, "--sae", sae_dir, "--step", 0.1, "--parents",
                             tmp_path / "p.npy", "--json")
    assert code == 0, err
    got = json.loads(out)
    assert got["conditional"] and got["flat_dl_bits_per_row"] > 0


def bad_inputs(tmp_path, toy):
    np.save(tmp_path / "nan.npy", np.where(np.arange(toy.x.size).reshape(toy.x.shape) == 77, np.nan, toy.x)
            .astype(np.float32))
    np.save(tmp_path / "inf.npy", np.full((4, 16), np.inf, dtype=np.float32))
    np.save(tmp_path / "1d.npy", np.zeros(16, dtype=np.float32))
    (tmp_path / "adir.npy").mkdir()
    np.save(tmp_path / "d8.npy", np.zeros((5, 8), dtype=np.float32))
    np.save(tmp_path / "int.npy", np.zeros((5, 16), dtype=np.int32))
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "x.csv").write_text("1,2\n")
    save_file({"a": np.zeros((2, 16), np.float32), "b": np.zeros((2, 16), np.float32)}, str(tmp_path / "two.safetensors"))
    np.save(tmp_path / "badpar.npy", np.full(48, 99, dtype=np.int64))
    return [
        (["nan.npy"], "row 4, column 13 is nan"),
        (["inf.npy"], "must be finite"),
        (["1d.npy"], r"must be \[rows, d_in\]"),
        (["adir.npy"], "is a directory"),
        (["d8.npy"], "d_in=8 but the SAE expects d_in=16"),
        (["int.npy"], "float32, float16 or float64, got int32"),
        (["junk.npy"], "not a readable .npy"),
        (["x.csv"], "unknown activation format"),
        (["two.safetensors"], "holds 2 tensors.*--key"),
        (["missing.npy"], "does not exist"),
        (["acts.npy", "--sae-missing"], "does not exist"),
        (["acts.npy", "--parents", "badpar.npy"], r"parents\[0\] = 99"),
        (["acts.npy", "--parents", "nofile.npy"], "does not exist"),
    ]


def test_bad_input_one_clear_line(capsys, tmp_path, toy, toy_npy, sae_dir):
    for args, match in bad_inputs(tmp_path, toy):
        sae = tmp_path / "nosae" if "--sae-missing" in args else sae_dir
        argv = ["dl", tmp_path / args[0], "--sae", sae, "--step", 0.1] + [
            tmp_path / a if a.endswith(".npy") else a for a in args[1:] if a != "--sae-missing"]
        code, out, err = run_cli(capsys, *argv)
        assert code != 0, args
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("mdlsae: error: "), (args, err)
        assert __import__("re").search(match, lines[0]), (args, lines[0])


@pytest.mark.parametrize("step", ["0", "-1", "nan", "abc"])
def test_non_positive_step_is_a_usage_error(capsys, toy_npy, sae_dir, step):
    with pytest.raises(SystemExit) as e:
        main(["dl", str(toy_npy), "--sae", str(sae_dir), "--step", step])
    assert e.value.code != 0
    err = capsys.readouterr().err
    assert "Traceback" not in err and "--step" in err


def test_entry_point_runs_without_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "mdlsae.cli", "dl", str(tmp_path / "none.npy"), "--sae",
                        str(tmp_path), "--step", "1"], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.startswith("mdlsae: error:")


def test_info_reports_build(capsys):
    code, out, _ = run_cli(capsys, "info", "--json")
    info = json.loads(out)
    assert code == 0 and "select_quantize" in info["cpu_kernels"] and info["threads"] >= 1
