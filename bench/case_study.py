"""MDL model-selection case studies with ``mdlsae sweep`` (seed 002 §6):

- ``mnist``: the write-up's experiment. TopK SAEs of widths 32 … 2048 and k 6 … 32 trained on
  the MNIST training set, each measured on the 10,000 test images at the write-up's tolerance
  MSE ≤ 0.015 (per pixel, pixels in [0, 1]), at its effective precision and with per-feature
  steps. Decoder features drawn as 28×28 images.
- ``toy``: the built-in toy data (64-d, 256 true features, ~4 active per row, as in
  ``mdlsae demo``), 30,000 training and 20,000 held-out rows, widths 64 … 1024, at FVU ≤ 0.25;
  here the true width is known.

Copies the table and figures into ``--out`` and writes ``summary.json`` with the figures quoted
in bench/README.md. Trained SAEs stay in ``--work`` and are reused by a re-run (training is
most of the time: ~1 h for MNIST on 2 busy cores; re-measuring takes minutes).

Usage: python bench/case_study.py mnist --mnist ../shared/data/mnist
       python bench/case_study.py toy
       [--work bench/out/<name>] [--out bench/results/<name>]"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

from mdlsae.sweep import SweepConfig, run_sweep

FIGURES = ("results.json", "results.csv", "dl_vs_width.png", "rd_curves.png", "l0_frontier.png", "amortisation.png")


def mnist_data(args):
    from mdlsae.mnist import IMAGE_SHAPE, load_mnist

    cfg = SweepConfig(widths=[32, 64, 128, 256, 512, 1024, 2048], ks=[6, 8, 12, 16, 24, 32], tolerance=0.015,
                      metric="mse", epochs=10, per_feature=True)
    return load_mnist(args.mnist, "train")[0], load_mnist(args.mnist, "test")[0], cfg, IMAGE_SHAPE, "MNIST"


def toy_data(args):
    from mdlsae.data import make_toy

    x = make_toy(n_rows=50_000, d=64, n_features=256, mean_active=4, seed=0).x
    cfg = SweepConfig(widths=[64, 128, 256, 512, 1024], ks=[3, 4, 6, 8], tolerance=0.25, metric="fvu",
                      epochs=6, per_feature=True)
    return x[:30_000], x[30_000:], cfg, None, "toy (256 true features)"


DATASETS = {"mnist": mnist_data, "toy": toy_data}


def summarize(res: dict) -> dict:
    """The figures quoted in bench/README.md."""
    cands = res["candidates"]
    ok = [c for c in cands if c["meets_tolerance"]]
    by_name = {c["sae"]: c for c in cands}
    savings = sorted(c["per_feature"]["saving"] for c in ok)

    def brief(c: dict, dl: float) -> dict:
        return {"sae": c["sae"], "d_sae": c["d_sae"], "k": c["k"], "l0": c["l0"], "dl_bits_per_row": dl,
                "dead_fraction": c["dead_fraction"]}

    glob = min(ok, key=lambda c: c["per_feature"]["global_dl_bits_per_row"], default=None)
    return {
        "machine": f"2-core {platform.machine()} CPU", "date": res["date"], "dataset": res["dataset"],
        "train_rows": res["train_rows"], "eval_rows": res["eval_rows"],
        "tolerance": {res["config"]["metric"]: res["config"]["tolerance"]},
        "saes": len(cands), "meeting_tolerance": len(ok),
        "mdl_optimum_global_step": glob and brief(glob, glob["per_feature"]["global_dl_bits_per_row"]),
        "mdl_optimum_per_feature_steps": res["chosen"] and brief(by_name[res["chosen"]],
                                                                 by_name[res["chosen"]]["dl_bits_per_row"]),
        "best_per_width": [brief(by_name[b["sae"]], b["dl_bits_per_row"]) | {"total_bits_per_row": b["total_bits_per_row"]}
                           for b in res["best_per_width"]],
        "per_feature_saving": savings and {"min": savings[0], "median": savings[len(savings) // 2], "max": savings[-1]},
        "rd_crossings": {k: res["rd_crossings"][k] for k in ("pairs", "crossing")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--mnist", help="directory with the four MNIST idx files (for mnist)")
    ap.add_argument("--work", help="where trained SAEs are kept (default bench/out/<dataset>)")
    ap.add_argument("--out", help="where the table and figures go (default bench/results/<dataset>)")
    args = ap.parse_args()
    if args.dataset == "mnist" and not args.mnist:
        ap.error("mnist needs --mnist DIR")
    work = Path(args.work or f"bench/out/{args.dataset}")
    out = Path(args.out or f"bench/results/{args.dataset}")
    train, evaluate, cfg, image_shape, name = DATASETS[args.dataset](args)
    res = run_sweep(train, evaluate, cfg, work, image_shape, name, progress=True)
    out.mkdir(parents=True, exist_ok=True)
    for f in FIGURES + (("features.png",) if image_shape else ()):
        shutil.copyfile(work / f, out / f)
    summary = summarize(res)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
