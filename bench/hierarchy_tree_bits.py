"""Where a strict tree's bits go on the planted-forest toy of ``hierarchy_tree_toy.py`` (issue 14,
must-show 1): the best flat TopK SAE with its discovered forest beside the *oracle* tree (started
at the planted directions and forest), each at its effective global step for ε = FVU 0.10 on
the 20,000 held-out rows. The DL estimate split into activity bits (conditional on the forest)
and value bits, with L0; the activity bits counted here row by row with siblings coded
independently and as exclusive (child j over the rows where its parent fires and no earlier
sibling does, the chain rule of "which child, if any" per parent), which is how the codec codes
a strict tree SAE's own forest since format version 4 (so a tree's DL column includes it, and
this count checks it). Then the oracle tree with a post-hoc threshold θ on its children (a
child is a candidate only when its pre-activation exceeds θ, as in a JumpReLU; no retraining),
DL at its own effective step: does silencing the spurious children pay? And the oracle
``batchtree`` (k8, k10: a batch budget instead of k roots) split the same way.

``--d 128``: the same forest in twice the dimensions (less superposition).

Usage: python bench/hierarchy_tree_bits.py [--d 64] [--out bench/results/hierarchy_tree_bits.json]  (~1 min)
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
from pathlib import Path

import numpy as np
import torch

from hierarchy_tree_toy import SPEC, TOL, oracle
from mdlsae.data import hierarchy_recovery, make_toy
from mdlsae.measure.dl import ErrorStats, scan
from mdlsae.measure.entropy import FeatureStats, binary_entropy, parent_cooccurrence
from mdlsae.measure.forest import discover_parents
from mdlsae.measure.kernels import Histogram, select_quantize
from mdlsae.models.train import TrainConfig, train
from mdlsae.selection.select import evaluate_sae


def activity_bits(on: np.ndarray, parents: np.ndarray, exclusive: bool) -> float:
    """Bits per row of the activity under the conditional code (DESIGN §2): each child over its
    context rows and the others; ``exclusive``: the context leaves out earlier siblings' rows."""
    n, total = len(on), 0.0
    for f in range(on.shape[1]):
        p = parents[f]
        if p < 0:
            total += n * float(binary_entropy(on[:, f].mean()))
            continue
        ctx = on[:, p].copy()
        if exclusive:
            for s in np.flatnonzero(parents[:f] == p):
                ctx &= ~on[:, s]
        for part in (ctx, ~ctx):
            if part.any():
                total += part.sum() * float(binary_entropy(on[part, f].mean()))
    return total / n


def split(name: str, sae, x: np.ndarray, held) -> dict:
    cand = evaluate_sae(x, sae, TOL, "fvu", per_feature=False, parents=None if sae.cfg.parents is not None else "auto")
    step = cand.step
    parents = sae.cfg.parents if sae.cfg.parents is not None else discover_parents(x, sae, step).parents
    stats, _ = scan(x, sae, step, parents)
    with torch.no_grad():
        gemm, bias = sae.encoder_parts(torch.from_numpy(x))
        k, threshold, tree = sae.selection()
        codes = select_quantize(gemm, k=k, threshold=threshold, step=step, bias=bias, parents=tree)
    on = np.zeros((codes.n_rows, sae.d_sae), dtype=bool)
    on[codes.rows(), codes.index] = True
    values = float((stats.active / stats.n_rows * stats.value_bits()).sum())
    r = {"sae": name, "step": step, "l0": codes.nnz / codes.n_rows, "dl_bits_per_row": stats.estimate_bits() / stats.n_rows,
         "activity_bits_per_row": activity_bits(on, parents, False), "value_bits_per_row": values,
         "activity_bits_exclusive_siblings": activity_bits(on, parents, True),
         "pairs_recovered": hierarchy_recovery(sae, on, held)["pairs_recovered"]}
    print(json.dumps(r), flush=True)
    return r


def thresholded(sae, x: np.ndarray, theta: float) -> dict:
    """The tree SAE ``sae`` with children silenced unless their pre-activation exceeds theta, at
    the coarsest global step (bisection, 30 halvings in log) whose FVU is within ε."""
    xt = torch.from_numpy(x)
    k, _, tree = sae.selection()
    with torch.no_grad():
        pre = sae.pre_acts(xt)
        kids = torch.from_numpy(tree >= 0)
        pre[:, kids] = pre[:, kids].masked_fill(pre[:, kids] <= theta, 0)

    def at(step: float):
        hist = Histogram(sae.d_sae)
        codes = select_quantize(pre, k=k, step=step, hist=hist, parents=tree)
        err = ErrorStats(sae.d_in)
        err.add(xt, codes.reconstruct(step, sae.W_dec.detach(), sae.b_dec.detach()))
        stats = FeatureStats(codes.n_rows, hist.active_counts(), *hist.to_csr(), tree, parent_cooccurrence(codes, tree),
                             exclusive=True)
        return err.fvu, stats.estimate_bits() / codes.n_rows, codes.nnz / codes.n_rows

    lo, hi = 1e-3, 10.0
    for _ in range(30):
        mid = (lo * hi) ** 0.5
        lo, hi = (mid, hi) if at(mid)[0] <= TOL else (lo, mid)
    fvu, dl, l0 = at(lo)
    r = {"theta": theta, "meets_tolerance": fvu <= TOL, "step": lo, "fvu": fvu, "l0": l0, "dl_bits_per_row": dl}
    print(json.dumps(r), flush=True)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=SPEC["d"], help="dimension of the toy (default: the tree toy's)")
    ap.add_argument("--out", default="bench/results/hierarchy_tree_bits.json")
    a = ap.parse_args()
    torch.set_num_threads(1)
    spec = {**SPEC, "d": a.d}
    toy = make_toy(n_rows=80_000, seed=1, **spec)
    x_tr, x_held = toy.x[:60_000], toy.x[60_000:]
    flat = train(x_tr, TrainConfig(architecture="topk", d_sae=224, k=12, seed=0)).sae
    tree = train(x_tr, TrainConfig(architecture="tree", d_sae=224, k=8, seed=0), init=oracle(toy, 8)).sae
    held = dataclasses.replace(toy, x=x_held, coeffs=toy.coeffs[60_000:])
    rows = [split("topk k12 + discovered forest", flat, x_held, held), split("oracle tree k8", tree, x_held, held)]
    for k in (8, 10):  # the tree under a batch budget, from the same start
        bt = train(x_tr, TrainConfig(architecture="batchtree", d_sae=224, k=k, seed=0), init=oracle(toy, 8)).sae
        rows.append(split(f"oracle batchtree k{k}", bt, x_held, held))
    thresholds = [thresholded(tree, x_held, t) for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5)]
    Path(a.out).write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                                       "spec": spec, "tolerance_fvu": TOL, "rows": rows,
                                       "oracle_tree_child_thresholds": thresholds}, indent=1) + "\n")


if __name__ == "__main__":
    main()
