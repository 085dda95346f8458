"""What pruning candidate pairs costs parent discovery (issue 13): the forest from each
feature's k best partners against the exhaustive search (k = d_sae, every pair a candidate:
exact Chow–Liu with edge costs), on an SAE small enough to count every pair.

Usage: python bench/forest_pruning.py ACTS SAE_DIR STEP [--k 4 16 64]
"""

from __future__ import annotations

import argparse
import time

from mdlsae.data.acts import Activations
from mdlsae.measure.forest import discover_parents
from mdlsae.models.sae import SAE


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("acts")
    ap.add_argument("sae")
    ap.add_argument("step", type=float)
    ap.add_argument("--k", type=int, nargs="+", default=[4, 16, 64])
    a = ap.parse_args()
    acts, sae = Activations(a.acts), SAE.load(a.sae)
    print(f"{'k':>6} {'seconds':>8} {'candidates':>11} {'edges':>6} {'saving b/row':>13} {'net b/row':>10}")
    for k in [*a.k, sae.d_sae]:
        t = time.perf_counter()
        s = discover_parents(acts, sae, a.step, k=k).summary()
        print(f"{k:>6} {time.perf_counter() - t:>8.1f} {s['candidates']:>11,} {s['edges']:>6} "
              f"{s['saving_bits_per_row']:>13.4f} {s['net_saving_bits_per_row']:>10.4f}")


if __name__ == "__main__":
    main()
