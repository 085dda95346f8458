"""Checks ``mdlsae select`` against an independent measurement: for every candidate, ``mdlsae
dl``'s code path (the fused kernel, streaming over the file) on a 2 % grid of global steps from
the reported step up to 4× coarser finds the coarsest step meeting ε; the DL there must match
the reported DL to a few %, and the chosen SAE must be the smallest DL among those meeting ε.

Usage: python bench/select_check.py ACTS --sae DIR [DIR ...] --tolerance EPS [--metric mse]
       [--out bench/results/select_check.json]   (ACTS may be mnist:DIR for the MNIST test set)"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date
from pathlib import Path

import numpy as np

from mdlsae.measure import measure_dl
from mdlsae.models.sae import SAE
from mdlsae.selection import select_sae


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("acts")
    ap.add_argument("--sae", nargs="+", required=True)
    ap.add_argument("--tolerance", type=float, required=True)
    ap.add_argument("--metric", choices=("mse", "fvu"), default="mse")
    ap.add_argument("--out", default="bench/results/select_check.json")
    args = ap.parse_args()
    acts = args.acts
    if acts.startswith("mnist:"):
        from mdlsae.data.mnist import load_mnist

        acts = load_mnist(acts[len("mnist:"):], "test")[0]
    t0 = time.perf_counter()
    sel = select_sae(acts, args.sae, args.tolerance, args.metric, progress=True)
    select_s = time.perf_counter() - t0
    rows = []
    for c in sel.candidates:
        sae = SAE.load(c.name)
        row = {"sae": c.name, "reported_step": c.step, "reported_dl": c.dl_bits_per_row, "loss": c.loss,
               "meets": c.meets}
        same = measure_dl(acts, sae, c.step)
        row["dl_at_reported_step_rel_diff"] = abs(same.dl_bits_per_row - c.dl_bits_per_row) / c.dl_bits_per_row
        if c.meets:
            coarsest = same
            for s in c.step * 1.02 ** np.arange(1, 71):
                r = measure_dl(acts, sae, np.float32(s))
                if getattr(r, args.metric) <= args.tolerance:
                    coarsest = r
            row["grid_coarsest_step"] = coarsest.step
            row["grid_dl"] = coarsest.dl_bits_per_row
            row["dl_rel_diff"] = (c.dl_bits_per_row - coarsest.dl_bits_per_row) / coarsest.dl_bits_per_row
        rows.append(row)
        print(json.dumps(row))
    ok = [c for c in sel.candidates if c.meets]
    res = {"date": date.today().isoformat(), "machine": f"2-core {platform.machine()} CPU",
           "acts": args.acts, "tolerance": args.tolerance, "metric": args.metric, "select_seconds": select_s,
           "chosen": sel.chosen.name if sel.chosen else None,
           "chosen_is_min_dl_meeting": sel.chosen is min(ok, key=lambda c: c.dl_bits_per_row, default=None),
           "max_abs_dl_rel_diff": max((abs(r["dl_rel_diff"]) for r in rows if "dl_rel_diff" in r), default=None),
           "candidates": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "candidates"}, indent=1))


if __name__ == "__main__":
    main()
