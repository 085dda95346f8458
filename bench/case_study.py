"""MDL model-selection case studies with ``mdlsae sweep`` (seed 002 §6):

- ``mnist``: the write-up's experiment. TopK SAEs of widths 32 … 1024 (×2) and k 8 … 32 trained
  10 epochs on the MNIST training set (~35 min on one busy core; the loss is still falling
  between 5 and 10 epochs, so fewer epochs would bias the comparison), each measured on the 10,000 test images at the write-up's tolerance
  MSE ≤ 0.015 (per pixel, pixels in [0, 1]), at its effective precision and with per-feature
  steps. Decoder features drawn as 28×28 images.
- ``toy``: the built-in toy data (64-d, 256 true features, ~4 active per row, as in
  ``mdlsae demo``), 30,000 training and 20,000 held-out rows, widths 64 … 1024, at FVU ≤ 0.25;
  here the true width is known.

Copies the table and figures into ``--out`` and writes ``summary.json`` with the figures quoted
in bench/README.md. Trained SAEs stay in ``--work`` and are reused by a re-run (training is
most of the time; re-measuring takes minutes). ``--widths``, ``--k`` and ``--epochs`` override
the grid (a re-run with a larger grid trains only the new SAEs).

Usage: python bench/case_study.py mnist --mnist ../shared/data/mnist
       python bench/case_study.py toy
       [--widths D ...] [--k K ...] [--epochs E] [--seed S] [--threads 1]
       [--work bench/out/<name>] [--out bench/results/<name>]"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

import torch

import numpy as np

from mdlsae.studies.sweep import SweepConfig, rd_crossings, rd_envelope, run_sweep

FIGURES = ("results.json", "results.csv", "dl_vs_width.png", "rd_curves.png", "l0_frontier.png", "amortisation.png")


def mnist_data(args):
    from mdlsae.data.mnist import IMAGE_SHAPE, load_mnist

    cfg = SweepConfig(widths=[32, 64, 128, 256, 512, 1024], ks=[8, 12, 16, 24, 32], tolerance=0.015,
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
        "machine": f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} thread(s)", "date": res["date"], "dataset": res["dataset"],
        "train_rows": res["train_rows"], "eval_rows": res["eval_rows"],
        "tolerance": {res["config"]["metric"]: res["config"]["tolerance"]},
        "saes": len(cands), "meeting_tolerance": len(ok),
        "mdl_optimum_global_step": glob and brief(glob, glob["per_feature"]["global_dl_bits_per_row"]),
        "mdl_optimum_per_feature_steps": res["chosen"] and brief(by_name[res["chosen"]],
                                                                 by_name[res["chosen"]]["dl_bits_per_row"]),
        "best_per_width": [brief(by_name[b["sae"]], b["dl_bits_per_row"]) | {"total_bits_per_row": b["total_bits_per_row"]}
                           for b in res["best_per_width"]],
        "per_feature_saving": savings and {"min": savings[0], "median": savings[len(savings) // 2], "max": savings[-1]},
        "per_feature_saving_at_optimum": glob and res["chosen"] and
        1 - by_name[res["chosen"]]["dl_bits_per_row"] / glob["per_feature"]["global_dl_bits_per_row"],
        "rd_crossings": rd_summary(res, ok, by_name),
        "optimum_vs_tolerance": optimum_vs_tolerance(cands, res["config"]["tolerance"]),
    }


def optimum_vs_tolerance(cands: list[dict], eps: float, factors=(0.67, 0.8, 1.0, 1.25, 1.5)) -> list[dict]:
    """Which SAE would be chosen at other tolerances, read off the rate-distortion curves (one
    global step, 17 steps ×√2 apart around each SAE's Δ at ε; DL interpolated linearly in
    log-loss between measured steps): the SAE whose lower envelope is cheapest at ε' (global
    steps only, so not exactly what ``select`` would give at ε'), among the SAEs whose curve
    reaches ε' (the curves of SAEs far from ε at its own Δ are short)."""
    out = []
    for f in factors:
        e = eps * f
        dl = {}
        for c in cands:
            loss, env = rd_envelope(c["rd_curve"])
            if loss[0] <= e <= loss[-1]:  # only curves that reach ε' (no extrapolation)
                dl[c["sae"]] = float(np.interp(np.log(e), np.log(loss), env))
        if dl:
            ranked = sorted(dl, key=dl.get)
            out.append({"tolerance": e, "saes_reaching_it": len(dl), "best": ranked[0], "dl_bits_per_row": dl[ranked[0]],
                        "runner_up": ranked[1] if len(ranked) > 1 else None,
                        "runner_up_dl_bits_per_row": dl[ranked[1]] if len(ranked) > 1 else None})
    return out


def rd_summary(res: dict, ok: list[dict], by_name: dict) -> dict:
    """Do rate-distortion curves cross? Over all pairs (most crossings involve SAEs that miss ε,
    at losses above it), among the SAEs meeting ε, and among the per-width best ones (the SAEs
    MDL chooses between), with how many cross near ε (between ε/2 and 2ε)."""
    eps = res["config"]["tolerance"]

    def near(xs: list[dict]) -> int:
        return sum(any(eps / 2 <= v <= 2 * eps for v in x["at_loss"]) for x in xs)

    def pairs(n: int) -> int:
        return n * (n - 1) // 2

    best = [by_name[b["sae"]] for b in res["best_per_width"]]
    x_ok, x_best = rd_crossings(ok), rd_crossings(best)
    return {"all": {k: res["rd_crossings"][k] for k in ("pairs", "crossing")},
            "meeting_tolerance": {"pairs": pairs(len(ok)), "crossing": len(x_ok), "crossing_near_tolerance": near(x_ok)},
            "per_width_best": {"pairs": pairs(len(best)), "crossing": len(x_best),
                               "crossing_near_tolerance": near(x_best), "crossings": x_best}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=DATASETS)
    ap.add_argument("--mnist", help="directory with the four MNIST idx files (for mnist)")
    ap.add_argument("--work", help="where trained SAEs are kept (default bench/out/<dataset>)")
    ap.add_argument("--out", help="where the table and figures go (default bench/results/<dataset>)")
    ap.add_argument("--widths", type=int, nargs="+", help="SAE widths (default: the dataset's grid)")
    ap.add_argument("--k", type=int, nargs="+", help="TopK k values (default: the dataset's grid)")
    ap.add_argument("--epochs", type=int, help="training epochs (default: the dataset's)")
    ap.add_argument("--seed", type=int, help="training seed (default 0)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.dataset == "mnist" and not args.mnist:
        ap.error("mnist needs --mnist DIR")
    work = Path(args.work or f"bench/out/{args.dataset}")
    out = Path(args.out or f"bench/results/{args.dataset}")
    train, evaluate, cfg, image_shape, name = DATASETS[args.dataset](args)
    cfg.widths, cfg.ks, cfg.epochs = args.widths or cfg.widths, args.k or cfg.ks, args.epochs or cfg.epochs
    cfg.seed = cfg.seed if args.seed is None else args.seed
    t0 = time.perf_counter()
    res = run_sweep(train, evaluate, cfg, work, image_shape, name, progress=True)
    seconds = time.perf_counter() - t0
    out.mkdir(parents=True, exist_ok=True)
    for f in FIGURES + (("features.png",) if image_shape else ()):
        shutil.copyfile(work / f, out / f)
    timings_file = work / "timings.json"  # the first run's time, training included, survives a re-run
    timings = json.loads(timings_file.read_text()) if timings_file.is_file() else \
        {"first_run_seconds": round(seconds), "note": "training + evaluation, one run of this script"}
    timings_file.write_text(json.dumps(timings) + "\n")
    summary = summarize(res) | {"grid": {"widths": cfg.widths, "k": cfg.ks, "epochs": cfg.epochs, "seed": cfg.seed},
                                "seconds_this_run": round(seconds), "first_run": timings}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
