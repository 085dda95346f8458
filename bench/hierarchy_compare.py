"""Architectures with and without hierarchy compared in bits at the same ε and width (issue 14,
must-show 2): flat TopK, BatchTopK and Matryoshka, each measured conditional on its own
discovered forest (``parents="auto"``), and the strict-tree SAEs (``tree`` and ``batchtree``,
regular forest, branching 4) measured on the forest they carry; on MNIST (MSE ≤ 0.015) and MiniLM layer 3 residuals
(FVU ≤ 0.2). Per SAE: DL at the effective global step and at per-feature steps, the flat DL
beside it, L0, the two-part total and the training time; the MDL choice per dataset (smallest
per-feature-step DL among the SAEs that meet ε). Writes
``bench/results/hierarchy_compare/<dataset>.json`` and one plot, ``dl.png``.

Kept small for a shared 2-core machine: one width and k per dataset (SETTINGS), few epochs,
subsampled rows (the flags say how many); MiniLM rows are 120k characters of stdlib docstrings
through all-MiniLM-L6-v2, the first 85 % of the tokens to train, the rest held out.

Usage: python bench/hierarchy_compare.py [--mnist ../shared/data/mnist] [--datasets mnist minilm]
           [--epochs E] [--train-rows 60000] [--eval-rows 5000] [--minilm-chars 120000] [--plot-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import tempfile
from pathlib import Path

import numpy as np
import torch

from mdlsae.data.extract import builtin_corpus, extract
from mdlsae.data.mnist import load_mnist
from mdlsae.models.train import TrainConfig, train
from mdlsae.selection.select import evaluate_sae

# (architecture, k as a share of the dataset's): the tree keeps k roots (L0 up to 2k with one level
# of children) or k/2 roots (L0 about k, as the flat ones); the batchtree k latents per row on average
ARCHS = (("topk", 1), ("batchtopk", 1), ("matryoshka", 1), ("tree", 1), ("tree", 0.5), ("batchtree", 1))
# dataset: (metric, tolerance, width, k, epochs); widths divisible by the tree's 5 latents per root
SETTINGS = {"mnist": ("mse", 0.015, 320, 16, 4), "minilm": ("fvu", 0.2, 640, 64, 10)}


def dataset_rows(name: str, a) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, held-out rows), float32."""
    if name == "mnist":
        return load_mnist(a.mnist, "train")[0][:a.train_rows], load_mnist(a.mnist, "test")[0][:a.eval_rows]
    text = builtin_corpus(a.minilm_chars)[:a.minilm_chars]
    with tempfile.TemporaryDirectory() as tmp:
        acts = np.load(extract(text, Path(tmp) / "acts.npy", layer=3).path)
    cut = int(0.85 * len(acts))
    return acts[:cut][:a.train_rows], acts[cut:][:a.eval_rows]


def compare(name: str, a) -> dict:
    metric, tol, width, k, epochs = SETTINGS[name]
    epochs = a.epochs or epochs
    tr, ev = dataset_rows(name, a)
    rows = []
    train(tr[:1024], TrainConfig(d_sae=width, k=k, epochs=1))  # warm-up: the first run's one-off costs out of the timings
    for arch, share in ARCHS:
        kk = max(1, round(k * share))
        res = train(tr, TrainConfig(architecture=arch, d_sae=width, k=kk, epochs=epochs, seed=0))
        # conditional on the forest (discovered, or the tree's own) at the global step and at per-feature steps
        g, c = (evaluate_sae(ev, res.sae, tol, metric, per_feature=pf, parents=None if "tree" in arch else "auto")
                .to_dict() for pf in (False, True))
        rows.append({"arch": f"{arch}_k{kk}", "d_sae": width, "k": kk, "train_seconds": res.stats["seconds"],
                     "train_fvu": res.stats["fvu"], "l0": g["l0"], "unquantized_loss": g["unquantized_loss"],
                     "meets_tolerance": g["meets_tolerance"], "loss": g["loss"],
                     "dl_global_step": g["dl_bits_per_row"], "flat_dl_global_step": g.get("flat_dl_bits_per_row"),
                     "dl_per_feature_steps": c["dl_bits_per_row"], "per_feature_fallback": c["per_feature"]["fallback"],
                     "forest_model_bits": (g.get("forest") or {}).get("model_bits"),
                     "total_bits_per_row": c["total_bits_per_row"]})
        print(json.dumps(rows[-1]), flush=True)
    ok = [r for r in rows if r["meets_tolerance"]]
    chosen = min(ok, key=lambda r: r["dl_per_feature_steps"], default=None)
    return {"dataset": name, "metric": metric, "tolerance": tol, "train_rows": len(tr), "eval_rows": len(ev),
            "d_in": int(tr.shape[1]), "epochs": epochs, "chosen": chosen and chosen["arch"], "rows": rows}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4), squeeze=False)
    for ax, res in zip(axes[0], results):
        x = np.arange(len(res["rows"]))
        for off, key, label in ((-0.2, "dl_global_step", "global step"), (0.2, "dl_per_feature_steps", "per-feature steps")):
            ax.bar(x + off, [r[key] for r in res["rows"]], 0.4, label=label)
        ax.set_xticks(x, [r["arch"] + ("" if r["meets_tolerance"] else "\n(misses ε)") for r in res["rows"]],
                      rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("DL, bits/row")
        ax.set_title(f"{res['dataset']}: {res['metric']} ≤ {res['tolerance']}, D={res['rows'][0]['d_sae']}; "
                     f"MDL choice {res['chosen']}", fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", default="../shared/data/mnist")
    ap.add_argument("--datasets", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--epochs", type=float, help="epochs for every dataset (default: 4 on MNIST, 10 on MiniLM)")
    ap.add_argument("--train-rows", type=int, default=60_000)
    ap.add_argument("--eval-rows", type=int, default=5_000)
    ap.add_argument("--minilm-chars", type=int, default=120_000, help="characters of stdlib docstrings to extract")
    ap.add_argument("--out", default="bench/results/hierarchy_compare")
    ap.add_argument("--plot-only", action="store_true", help="redraw dl.png from the results already in --out")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = f"{platform.node()} {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads"
    for name in [] if a.plot_only else a.datasets:
        res = {"date": datetime.date.today().isoformat(), "machine": machine, **compare(name, a)}
        (out / f"{name}.json").write_text(json.dumps(res, indent=2) + "\n")
    # the plot shows every dataset measured so far (a run can redo one of them)
    plot([json.loads((out / f"{n}.json").read_text()) for n in SETTINGS if (out / f"{n}.json").is_file()],
         out / "dl.png")


if __name__ == "__main__":
    main()
