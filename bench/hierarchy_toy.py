"""Hierarchy on toy data with planted strict two-level trees (issue 14, a first look): how TopK,
BatchTopK and Matryoshka SAEs of the true width recover the planted parent–child pairs and how
much they absorb (``mdlsae.data.hierarchy_recovery``), trained with defaults on 60,000 rows and
measured on 20,000 held-out rows.

Usage: python bench/hierarchy_toy.py [--out bench/results/hierarchy_toy.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
from pathlib import Path

import torch

from mdlsae.data import hierarchy_recovery, make_toy
from mdlsae.models.train import TrainConfig, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/results/hierarchy_toy.json")
    a = ap.parse_args()
    spec = dict(d=64, n_features=256, mean_active=3, n_parents=16, children=2, child_rate=0.7, levels=2)
    toy = make_toy(n_rows=80_000, seed=1, **spec)
    held = dataclasses.replace(toy, x=toy.x[60_000:], coeffs=toy.coeffs[60_000:])
    rows = []
    for arch in ("topk", "batchtopk", "matryoshka"):
        res = train(toy.x[:60_000], TrainConfig(architecture=arch, d_sae=256, k=4, seed=0))
        with torch.no_grad():
            active = (res.sae.encode(torch.from_numpy(held.x)) > 0).numpy()
        r = {"arch": arch, "fvu": res.stats["fvu"], "l0": res.stats["l0"], "seconds": res.stats["seconds"],
             **hierarchy_recovery(res.sae, active, held),
             "at_cosine_0.7": hierarchy_recovery(res.sae, active, held, min_cosine=0.7)}
        rows.append(r)
        print(json.dumps(r))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps({"date": datetime.date.today().isoformat(), "spec": spec, "rows": rows},
                                      indent=2) + "\n")


if __name__ == "__main__":
    main()
