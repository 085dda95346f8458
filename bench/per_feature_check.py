"""Is the per-feature allocator (``mdlsae.selection.allocate``) leaving bits on the table? A cross-check
on one SAE at one tolerance ε: the allocator's result against a second search over the same
family of allocations. For each multiplier λ (×2 apart around the global operating point's
slope) the Lagrangian shape ``argmin_j R_ij + λ·D_ij`` is taken and all its steps are scaled by
one factor c, bisected (14 real evaluations) so that the *real* loss meets ε exactly. This
corrects the distortion model's blind spot (it ignores cross-terms between features' errors)
at the price of ~180 evaluations. Prints the DL at the global step, the allocator's and the
rescaled search's best.

Usage: python bench/per_feature_check.py mnist SAE_DIR EPS [--metric mse] [--mnist DIR]
       python bench/per_feature_check.py ACTS.npy SAE_DIR EPS --metric fvu"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from mdlsae.selection import allocate
from mdlsae.selection.precision import Evaluator, SparseLatents, effective_precision
from mdlsae.models.sae import SAE


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", help="'mnist' (test split) or an activation .npy file")
    ap.add_argument("sae")
    ap.add_argument("eps", type=float)
    ap.add_argument("--metric", default="mse", choices=("mse", "fvu"))
    ap.add_argument("--mnist", default="../shared/data/mnist")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.data == "mnist":
        from mdlsae.data.mnist import load_mnist

        x = load_mnist(args.mnist, "test")[0]
    else:
        x = np.load(args.data)
    ev = Evaluator(SparseLatents.from_sae(x, SAE.load(args.sae)), args.metric)
    t = time.perf_counter()
    prec = effective_precision(ev, args.eps)
    al = allocate.allocate_steps(ev, prec)
    print(f"global step: {prec.point.dl_bits_per_row:.3f} bits/row; allocator: {al.point.dl_bits_per_row:.3f} "
          f"(fallback {al.fallback}, {al.evaluations} evaluations, {time.perf_counter() - t:.1f} s)")
    t, n0 = time.perf_counter(), ev.evaluations
    steps, R, D = allocate.rate_distortion_tables(ev, prec.step)
    cols, j0 = np.arange(steps.shape[1]), -allocate.GRID_FINEST
    dR, dD = R[j0].sum() - R[j0 + 1].sum(), D[j0 + 1].sum() - D[j0].sum()
    lam0 = dR / dD if dR > 0 and dD > 0 else 1.0 / max(D[j0].mean(), 1e-30)
    if args.metric == "mse":  # the distortion model's blind spot, at the global slope λ0
        c0 = np.argmin(R + lam0 * D, axis=0)
        p0 = ev.evaluate(steps[c0, cols])
        d_in = ev.latents.x.shape[1]
        print(f"allocation at lambda0: modelled MSE change {(D[c0, cols].sum() - D[j0].sum()) / d_in:+.5f}, "
              f"real {p0.loss - prec.point.loss:+.5f} (DL {p0.dl_bits_per_row:.2f} bits/row)")
    best = (prec.point.dl_bits_per_row, None)
    for m in np.arange(-3, 3.01, 0.5):
        shape = steps[np.argmin(R + lam0 * 4.0 ** m * D, axis=0), cols].astype(np.float64)
        lo, hi, ok = 1 / 64, 64.0, None
        for _ in range(14):
            c = np.sqrt(lo * hi)
            p = ev.evaluate((shape * c).astype(np.float32))
            if p.loss <= args.eps:
                lo, ok = c, p
            else:
                hi = c
        if ok is not None:
            print(f"  lambda0*4^{m:+.1f}: scale {lo:.3f}, {ok.dl_bits_per_row:.3f} bits/row at loss {ok.loss:.5g}")
            if ok.dl_bits_per_row < best[0]:
                best = (ok.dl_bits_per_row, m)
    print(f"rescaled Lagrangian shapes: best {best[0]:.3f} bits/row ({ev.evaluations - n0} evaluations, "
          f"{time.perf_counter() - t:.1f} s)")


if __name__ == "__main__":
    main()
