"""Must-show 1 of issue #4: on toy data (d=64, 256 true features, ~4 active per row, 120k rows)
train each architecture with default settings (D=512, k=6) and report MMCS against the true
features, FVU, L0 and dead fraction. Run: ``python bench/train_toy.py [--threads 1]``."""

from __future__ import annotations

import argparse
import time

import torch

from mdlsae.data import make_toy, mmcs
from mdlsae.models.train import ARCHITECTURES, TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--archs", default=",".join(ARCHITECTURES))
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    toy = make_toy(120_000, seed=args.seed)
    print(f"{'arch':<10} {'MMCS':>7} {'FVU':>7} {'L0':>6} {'dead':>6} {'dense':>6} {'time s':>7} {'rows/s':>8}")
    for arch in args.archs.split(","):
        t0 = time.perf_counter()
        r = train(toy.x, TrainConfig(architecture=arch, d_sae=512, k=6, seed=args.seed))
        s = r.stats
        print(f"{arch:<10} {mmcs(r.sae, toy.features):>7.4f} {s['fvu']:>7.4f} {s['l0']:>6.2f} {s['dead_frac']:>6.3f} "
              f"{s['dense_frac']:>6.3f} {time.perf_counter() - t0:>7.1f} {s['rows_per_s']:>8,.0f}", flush=True)


if __name__ == "__main__":
    main()
