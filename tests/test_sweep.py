"""``mdlsae sweep`` (grid training, results table, plots, resume), rate-distortion crossings and
the MNIST idx reader."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.data.mnist import load_mnist
from mdlsae.studies.sweep import best_per_width, feature_picks, rd_crossings, rd_envelope

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture()
def split_npy(tmp_path, toy):
    np.save(tmp_path / "train.npy", toy.x[:2000])
    np.save(tmp_path / "eval.npy", toy.x[2000:])
    return tmp_path / "train.npy", tmp_path / "eval.npy"


def test_sweep_writes_table_and_plots_and_resumes(capsys, tmp_path, split_npy):
    train, ev = split_npy
    out = tmp_path / "sweep"
    argv = ["sweep", str(train), "--eval", str(ev), "--widths", "16", "64", "--k", "2", "4", "--epochs", "2",
            "--tolerance", "0.12", "--per-feature", "--image-shape", "4", "4", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    names = [c["sae"] for c in res["candidates"]]
    assert names == ["topk_D16_k2", "topk_D16_k4", "topk_D64_k2", "topk_D64_k4"]
    assert res["eval_rows"] == 1000 and res["train_rows"] == 2000 and "MDL optimum" in printed
    ok = [c for c in res["candidates"] if c["meets_tolerance"]]
    assert ok and res["chosen"] == min(ok, key=lambda c: c["dl_bits_per_row"])["sae"]
    for c in res["candidates"]:
        assert len(c["rd_curve"]) == 17 and c["per_feature"]["saving"] >= 0
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["sae"] for r in rows] == names and float(rows[0]["dl_bits_per_row"]) > 0
    for png in ("dl_vs_width", "rd_curves", "l0_frontier", "amortisation", "features"):
        assert (out / f"{png}.png").read_bytes()[:8] == PNG_MAGIC, png
    # a re-run reuses the trained SAEs (same recorded settings) and reproduces the table
    stamp = {n: (out / "saes" / n / "sae_weights.safetensors").stat().st_mtime_ns for n in names}
    assert main(argv) == 0
    assert {n: (out / "saes" / n / "sae_weights.safetensors").stat().st_mtime_ns for n in names} == stamp
    again = json.loads((out / "results.json").read_text())
    assert [c["dl_bits_per_row"] for c in again["candidates"]] == [c["dl_bits_per_row"] for c in res["candidates"]]


def test_sweep_argument_errors(capsys, tmp_path, split_npy):
    train, ev = split_npy
    base = ["--widths", "8", "--k", "2", "--tolerance", "0.1", "--out", str(tmp_path / "o")]
    for argv, match in [(["sweep", str(train)] + base, "needs TRAIN and --eval"),
                        (["sweep", str(train), "--mnist", str(tmp_path)] + base, "not both"),
                        (["sweep", "--mnist", str(tmp_path / "nope")] + base, "does not exist")]:
        assert main(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and match in err[0], err


def curve(losses, dls):
    return [{"step": float(i), "loss": l, "dl_bits_per_row": d, "l0": 1.0} for i, (l, d) in enumerate(zip(losses, dls))]


def test_rd_crossings_and_envelope():
    loss = np.geomspace(0.01, 0.1, 8)
    a = {"sae": "a", "rd_curve": curve(loss, 10 / loss)}
    b = {"sae": "b", "rd_curve": curve(loss, 10 / loss + 50)}  # always dearer: no crossing
    c = {"sae": "c", "rd_curve": curve(loss, 0.2 / loss ** 2)}  # cheaper than a, b at high loss only
    got = rd_crossings([a, b, c])
    assert {(x["a"], x["b"]) for x in got} == {("a", "c"), ("b", "c")}
    assert all(len(x["at_loss"]) == 1 and 0.015 < x["at_loss"][0] < 0.03 for x in got)
    # the envelope is the fewest bits reaching each loss or less: non-increasing in the loss
    lo, dl = rd_envelope(curve([0.3, 0.1, 0.2], [5.0, 9.0, 12.0]))
    assert lo.tolist() == [0.1, 0.2, 0.3] and dl.tolist() == [9.0, 9.0, 5.0]


def test_best_per_width():
    cands = [{"architecture": "topk", "d_sae": d, "k": k, "meets_tolerance": ok, "dl_bits_per_row": dl, "sae": f"{d}/{k}"}
             for d, k, ok, dl in [(8, 2, True, 30.0), (8, 4, True, 20.0), (16, 2, False, 1.0), (16, 4, True, 25.0)]]
    assert [c["sae"] for c in best_per_width(cands)] == ["8/4", "16/4"]


def test_feature_picks_are_narrowest_optimum_widest_across_architectures():
    cands = [{"architecture": a, "d_sae": d, "k": 4, "meets_tolerance": True, "dl_bits_per_row": dl, "sae": f"{a}{d}"}
             for a, d, dl in [("relu", 16, 40.0), ("relu", 64, 35.0), ("topk", 8, 50.0), ("topk", 32, 20.0),
                              ("topk", 128, 30.0)]]
    best = best_per_width(cands)
    assert [c["sae"] for c in best] == ["relu16", "relu64", "topk8", "topk32", "topk128"]  # by arch, then width
    chosen = min(cands, key=lambda c: c["dl_bits_per_row"])
    got = [(label, c["sae"]) for label, c in feature_picks(best, chosen)]
    assert got == [("narrowest", "topk8"), ("MDL-optimal", "topk32"), ("widest", "topk128")]
    # an SAE that is both the optimum and an end is drawn once, under both labels
    got = [(label, c["sae"]) for label, c in feature_picks(best[:1], best[0])]
    assert got == [("narrowest = MDL-optimal = widest", "relu16")]


def write_idx(path: Path, magic: int, arr: np.ndarray, gz: bool) -> None:
    data = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape) + arr.tobytes()
    (gzip.open if gz else open)(path, "wb").write(data)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_reader(tmp_path, gz):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    sfx = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{sfx}", 0x803, imgs, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", 0x801, labels, gz)
    x, y = load_mnist(tmp_path, "test")
    assert x.shape == (5, 784) and x.dtype == np.float32 and np.array_equal(y, labels)
    assert np.array_equal(x, imgs.reshape(5, -1) / np.float32(255))
    with pytest.raises(MdlsaeError, match="no train-images"):
        load_mnist(tmp_path, "train")
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{sfx}", 0x803, labels, gz)
    with pytest.raises(MdlsaeError, match="idx magic"):
        load_mnist(tmp_path, "test")
    with pytest.raises(MdlsaeError, match="split must be"):
        load_mnist(tmp_path, "dev")


@pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST copy is not here")
def test_real_mnist_shapes():
    x, y = load_mnist(MNIST, "test")
    assert x.shape == (10000, 784) and y.shape == (10000,) and 0 <= x.min() and x.max() == 1
    assert np.bincount(y).tolist()[:3] == [980, 1135, 1032]
