"""Parent discovery at GPT-2 size (issue 13, must-show 4): D = 24,576 features, k = 64 active
per row, 1,000,000 rows, at the default memory budget, on this machine.

The codes are synthetic but shaped like an SAE's: 64 distinct features per row drawn from a
power law over the features, and in 2,048 planted families a parent whose children fire mostly
with it. They go through the product's own path: a CodeStore (half the budget in memory, the
rest spilled to a temporary file), then ``candidate_edges`` (one pass over the stored codes per
block of features whose counts fill the other half) and ``forest_of``. Running the SAE to get
such codes is a separate cost: the GEMM alone takes ~4.2 s per 16,384 rows here
(bench/encode_vs_gemm.py), ~260 s per million rows. Peak RSS from getrusage.

Usage: python bench/discovery_scale.py [--rows 1000000] [--out bench/results/discovery_scale.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import numpy as np

from mdlsae.budget import budget_bytes
from mdlsae.measure.codes import SparseCodes
from mdlsae.measure.forest import DEFAULT_CANDIDATES, candidate_edges, forest_of
from mdlsae.measure.store import CodeStore

D, K, FAMILIES, CHILDREN, BATCH = 24_576, 64, 2_048, 3, 16_384


def batch_codes(b: int, rows: int, rates: np.ndarray) -> SparseCodes:
    """Rows of batch b: each family's parent fires at its rate, one of its children with it at
    P = 0.6 (or alone at 0.005); the rest of the row drawn from the power law over the other
    features, as many draws as bring the mean L0 to 64 (repeats collapse)."""
    rng = np.random.default_rng(b)
    parent_on = rng.random((rows, FAMILIES)) < rates[:FAMILIES]
    u = rng.random((rows, FAMILIES))
    child_on = np.where(parent_on, u < 0.6, u < 0.005)
    pick = rng.integers(0, CHILDREN, size=(rows, FAMILIES))
    act = np.zeros((rows, D), dtype=bool)
    act[:, :FAMILIES] = parent_on
    r, f = np.nonzero(child_on)
    act[r, FAMILIES + f * CHILDREN + pick[r, f]] = True
    free = np.arange(FAMILIES * (1 + CHILDREN), D)
    cdf = np.cumsum(rates[free]) / rates[free].sum()
    planted = rates[:FAMILIES].sum() * 1.6 + FAMILIES * 0.005
    draws = rng.random((rows, max(0, int(round(K - planted)))))
    act[np.arange(rows)[:, None], free[np.minimum(np.searchsorted(cdf, draws), len(free) - 1)]] = True
    rr, cc = np.nonzero(act)
    ptr = np.concatenate([[0], np.cumsum(act.sum(1))]).astype(np.int64)
    return SparseCodes(ptr, cc.astype(np.int32), np.ones(len(cc), dtype=np.int32), D)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--out", default="bench/results/discovery_scale.json")
    a = ap.parse_args()
    rates = 0.2 * (np.arange(D) + 1.0) ** -0.5
    t0 = time.perf_counter()
    with CodeStore(D, budget_bytes() // 2, tempfile.gettempdir()) as store:
        active = np.zeros(D, dtype=np.int64)
        for b, start in enumerate(range(0, a.rows, BATCH)):  # made in small pieces: a dense row costs D bytes
            codes = SparseCodes.concat([batch_codes(b * 8 + p, min(BATCH // 8, a.rows - s), rates)
                                        for p, s in enumerate(range(start, min(a.rows, start + BATCH), BATCH // 8))], D)
            active += np.bincount(codes.index, minlength=D)
            store.append(codes)
        t_codes = time.perf_counter() - t0
        t1 = time.perf_counter()
        i, j, bits, both = candidate_edges(store.batches, a.rows, active, DEFAULT_CANDIDATES, progress=True)
        t_count = time.perf_counter() - t1
        spilled = store.spilled_bytes
    t2 = time.perf_counter()
    forest = forest_of(D, a.rows, active, i, j, bits, both, len(i))
    t_forest = time.perf_counter() - t2
    planted = np.full(D, -1)
    planted[FAMILIES:FAMILIES * (1 + CHILDREN)] = np.repeat(np.arange(FAMILIES), CHILDREN)
    edges = {frozenset((c, int(planted[c]))) for c in np.flatnonzero(planted >= 0)}
    found = {frozenset((c, int(forest.parents[c]))) for c in forest.children}
    res = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cpus",
           "rows": a.rows, "d_sae": D, "k": K, "budget_bytes": budget_bytes(), "candidates_per_feature":
           DEFAULT_CANDIDATES, "spilled_bytes": spilled, "seconds_making_codes": t_codes,
           "seconds_counting_and_candidates": t_count, "seconds_forest": t_forest,
           "seconds_discovery": t_count + t_forest, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "mean_l0": float(active.sum() / a.rows), "candidate_edges": int(len(i)), "planted_edges_recovered": len(edges & found) / len(edges),
           **forest.summary()}
    print(json.dumps(res, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
