"""Coding a forest with a hub: one parent with K children, as a forest discovered on a wide SAE
or a tree SAE started from it can have. Every child's rows split against (encode) or merge
with (decode) its parent's, and with exclusive siblings map into the parent's rows its earlier
siblings left; none of that may cost the parent's rows per child, or a hub costs K times them.

Codes: one 65,536-row chunk, the parent active in 80 % of the rows with exactly one of its K
children (exclusive siblings), and a child alone in half of the other rows (so children also
have rows without their parent). Coded three ways side by side, each encode and decode the
median of --reps: flat (no forest), conditional on the forest, and conditional with exclusive
siblings; non-zeros per second and the payload.

Usage: python bench/forest_hub.py [--children 1000 8000 32000] [--reps 5] [--out bench/results/forest_hub.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from mdlsae._native import _C
from mdlsae.codec.api import build_model
from mdlsae.measure.codes import SparseCodes
from mdlsae.measure.entropy import FeatureStats, parent_cooccurrence
from mdlsae.measure.kernels import Histogram

ROWS = 65_536


def hub_codes(k: int, seed: int = 0) -> tuple[SparseCodes, np.ndarray]:
    rng = np.random.default_rng(seed)
    with_parent = rng.random(ROWS) < 0.8
    alone = ~with_parent & (rng.random(ROWS) < 0.5)
    kid = rng.integers(1, k + 1, ROWS).astype(np.int32)
    width = 2 * with_parent + alone
    row_ptr = np.r_[0, np.cumsum(width)].astype(np.int64)
    index = np.empty(int(row_ptr[-1]), np.int32)
    first = row_ptr[:-1]
    index[first[with_parent]] = 0  # the parent, then its child (features ascend in a row)
    index[first[with_parent] + 1] = kid[with_parent]
    index[first[alone]] = kid[alone]
    codes = SparseCodes(row_ptr, index, np.ones(len(index), np.int32), k + 1)
    return codes, np.r_[-1, np.zeros(k, np.int64)]


def stats(codes: SparseCodes, parents, exclusive: bool) -> FeatureStats:
    h = Histogram(codes.d_sae)
    h.add_codes(codes.index, codes.q, codes.n_rows)
    wp = None if parents is None else parent_cooccurrence(codes, parents)
    return dataclasses.replace(FeatureStats(codes.n_rows, h.active_counts(), *h.to_csr(), parents, wp), exclusive=exclusive)


def timed(f, reps: int) -> tuple[float, object]:
    out, ts = None, []
    for _ in range(reps):
        t = time.perf_counter()
        out = f()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--children", type=int, nargs="+", default=[1000, 8000, 32000])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="bench/results/forest_hub.json")
    a = ap.parse_args()
    rows = []
    for k in a.children:
        codes, parents = hub_codes(k)
        for name, par, exclusive in (("flat", None, False), ("conditional", parents, False),
                                     ("exclusive siblings", parents, True)):
            model = build_model(stats(codes, par, exclusive))
            _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, ROWS, 0)  # tables built, caches warm
            te, payloads = timed(lambda: _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, ROWS, 0), a.reps)
            td, back = timed(lambda: _C.decode_chunks(model, payloads, [ROWS], 0), a.reps)
            assert SparseCodes(*back, codes.d_sae) == codes
            r = {"children": k, "code": name, "nnz": codes.nnz, "encode_s": te, "decode_s": td,
                 "encode_M_nnz_per_s": codes.nnz / te / 1e6, "decode_M_nnz_per_s": codes.nnz / td / 1e6,
                 "payload_bytes": sum(len(p) for p in payloads)}
            print(json.dumps(r), flush=True)
            rows.append(r)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"date": datetime.date.today().isoformat(), "machine": platform.machine(),
                                       "rows_per_chunk": ROWS, "reps": a.reps, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
