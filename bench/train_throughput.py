"""Training throughput by architecture at the same width (issue 14, must-show 3): rows per
second of ``train`` for topk, batchtopk, matryoshka, tree and batchtree (a regular forest of --branching)
on one activation file, side by side, median of --reps runs each (interleaved), on this
machine's default threads. --d-sae must be a multiple of the tree's latents per root.

Usage: python bench/train_throughput.py ACTS.npy [--d-sae 1536] [--k 32] [--branching 5] [--epochs 3]
           [--reps 3] [--out bench/results/train_throughput.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
from pathlib import Path

import torch

from mdlsae.data.acts import Activations
from mdlsae.models.train import TrainConfig, train

ARCHS = ("topk", "batchtopk", "matryoshka", "tree", "batchtree")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("acts")
    ap.add_argument("--d-sae", type=int, default=1536)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--branching", default="5", help="tree: children per latent, level by level (e.g. 2,2)")
    ap.add_argument("--epochs", type=float, default=3)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="bench/results/train_throughput.json")
    a = ap.parse_args()
    acts = Activations(a.acts)
    branching = [int(b) for b in a.branching.split(",")]
    runs = {arch: [] for arch in ARCHS}
    fvu = {}
    for _ in range(a.reps):
        for arch in ARCHS:
            res = train(acts, TrainConfig(architecture=arch, d_sae=a.d_sae, k=a.k, epochs=a.epochs,
                                           branching=branching if "tree" in arch else None))
            runs[arch].append(res.stats["rows_per_s"])
            print(f"{arch}: {res.stats['rows_per_s']:,.0f} rows/s", flush=True)
            fvu[arch] = res.stats["fvu"]
    med = {arch: statistics.median(v) for arch, v in runs.items()}
    out = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cpus, torch "
           f"{torch.__version__}, {torch.get_num_threads()} threads", "acts": a.acts, "rows": acts.n_rows,
           "d_in": acts.d, "d_sae": a.d_sae, "k": a.k, "branching": branching, "epochs": a.epochs, "rows_per_s": runs,
           "median_rows_per_s": med, "slowdown_vs_topk": {arch: med["topk"] / med[arch] for arch in ARCHS},
           "final_fvu": fvu}
    print(json.dumps({k: out[k] for k in ("median_rows_per_s", "slowdown_vs_topk", "final_fvu")}, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
