"""MDL selection over the MNIST grid with and without feature forests (issue 13, must-show 3).

The 30 TopK SAEs of the case study (bench/case_study.py mnist, trained into bench/out/mnist),
measured on the 10,000 test images at MSE <= 0.015 per pixel, each at its effective precision:
once flat, once with ``parents="auto"`` (each SAE conditional on its own forest, found on its
codes at its step, the two-part total paying for the forest). Side by side in one run.

Usage: python bench/select_forests_mnist.py --mnist ../shared/data/mnist [--saes bench/out/mnist/saes]
       [--out bench/results/select_forests_mnist.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path

from mdlsae.data.mnist import load_mnist
from mdlsae.selection.select import select_sae


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mnist", required=True)
    ap.add_argument("--saes", default="bench/out/mnist/saes")
    ap.add_argument("--tolerance", type=float, default=0.015)
    ap.add_argument("--out", default="bench/results/select_forests_mnist.json")
    a = ap.parse_args()
    x, _ = load_mnist(a.mnist, "test")
    saes = sorted(Path(a.saes).iterdir(), key=lambda p: (int(p.name.split("_D")[1].split("_")[0]), p.name))
    t = time.perf_counter()
    flat = select_sae(x, saes, a.tolerance)
    t_flat = time.perf_counter() - t
    t = time.perf_counter()
    tree = select_sae(x, saes, a.tolerance, parents="auto")
    t_tree = time.perf_counter() - t
    rows = []
    for f, c in zip(flat.candidates, tree.candidates):
        rows.append({"sae": Path(f.name).name, "d_sae": f.report.d_sae, "k": f.sae_cfg["k"], "meets": f.meets,
                     "step": f.precision.step, "flat_dl": f.dl_bits_per_row, "forest_dl": c.dl_bits_per_row,
                     "saving_pct": 100 * (1 - c.dl_bits_per_row / f.dl_bits_per_row) if f.dl_bits_per_row else 0.0,
                     "flat_total": f.two_part.total_bits_per_row, "forest_total": c.two_part.total_bits_per_row,
                     "forest_bits": c.two_part.forest_bits, "edges": c.forest["edges"],
                     "strictness_median": c.forest["strictness_median"]})
    print(f"{'SAE':<16} {'ok':>3} {'flat DL':>8} {'forest DL':>9} {'saving':>7} {'flat tot':>9} {'forest tot':>10} "
          f"{'edges':>6}")
    for r in rows:
        print(f"{r['sae']:<16} {'yes' if r['meets'] else 'no':>3} {r['flat_dl']:>8.2f} {r['forest_dl']:>9.2f} "
              f"{r['saving_pct']:>6.1f}% {r['flat_total']:>9.2f} {r['forest_total']:>10.2f} {r['edges']:>6}")
    res = {"date": datetime.date.today().isoformat(), "tolerance_mse": a.tolerance, "rows": len(x),
           "chosen_flat": Path(flat.chosen.name).name if flat.chosen else None,
           "chosen_forest": Path(tree.chosen.name).name if tree.chosen else None,
           "seconds_flat": t_flat, "seconds_forest": t_tree, "candidates": rows}
    for crit in ("data", "total"):
        for name, sel in (("flat", flat), ("forest", tree)):
            ok = [c for c in sel.candidates if c.meets]
            best = min(ok, key=lambda c: c.criterion(crit), default=None)
            res[f"chosen_{name}_by_{crit}"] = Path(best.name).name if best else None
    print({k: v for k, v in res.items() if k.startswith("chosen")})
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
