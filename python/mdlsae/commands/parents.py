"""``mdlsae parents``: find the feature forest under which an SAE's codes are shortest
(measure/forest.py), save it for ``--parents``, and measure it honestly on held-out rows."""

from __future__ import annotations

import json

import numpy as np

from . import (add_acts_argument, add_device_flag, add_distributed_flag, add_dtype_flag, add_memory_flag,
               add_progress_flag, load_sae, open_acts, positive_float, positive_int, 
               show_progress)
from .. import distributed
from ..errors import expect
from ..fileio import atomic_file
from ..measure.dl import measure_dl
from ..measure.forest import DEFAULT_CANDIDATES, discover_parents
from ..models.sae import SAE
from .dl import add_step_arguments, step_from


def add_parser(sub) -> None:
    p = sub.add_parser(
        "parents", help="discover the parent forest that shortens an SAE's codes",
        description="Count how feature activities co-occur in the SAE's quantized codes of ACTS and keep the "
                    "maximum spanning forest of their mutual information (Chow-Liu): coding a child given its "
                    "parent's activity saves exactly N*I bits, and an edge is kept only where that pays for "
                    "its model bits. With --fit below 1 the forest is fit on the first rows and its saving "
                    "measured on the rest.")
    add_acts_argument(p)
    p.add_argument("--sae", required=True, metavar="SAE_DIR", help="SAE directory in the SAELens layout")
    add_step_arguments(p)
    p.add_argument("-o", "--output", metavar="PARENTS.npy", help="where to save the forest (int64 [d_sae], -1 for "
                                                                "roots), for `dl`/`encode --parents`")
    p.add_argument("--fit", type=positive_float, default=1.0, metavar="FRACTION",
                   help="fit on this leading fraction of the rows and measure on the rest (default 1: fit and "
                        "report on all rows, in-sample)")
    p.add_argument("--candidates", type=positive_int, default=DEFAULT_CANDIDATES, metavar="K",
                   help=f"candidate partners kept per feature (default {DEFAULT_CANDIDATES}; d_sae searches "
                        "every pair)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_device_flag(p)
    add_memory_flag(p)
    add_dtype_flag(p)
    add_distributed_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def report(acts, sae: SAE, step, fit: float = 1.0, k: int = DEFAULT_CANDIDATES, progress: bool = False):
    """(forest, summary dict): the forest fit on the leading ``fit`` of the rows, its in-sample
    figures and, when rows are held out, the measured DL of those rows without and with it."""
    expect(0 < fit <= 1, f"--fit must be in (0, 1], got {fit}")
    n_fit = acts.n_rows if fit == 1 else int(round(fit * acts.n_rows))
    expect(n_fit > 0, f"--fit {fit} leaves no rows of the {acts.n_rows} to fit on")
    forest = discover_parents(acts, sae, step, stop=n_fit, k=k, progress=progress)
    out = forest.summary()
    if n_fit < acts.n_rows:
        held = measure_dl(acts.window(n_fit, acts.n_rows), sae, step, parents=forest.parents, progress=progress)
        out["held_out"] = {"rows": held.n_rows, "flat_bits_per_row": held.flat_dl_bits_per_row,
                           "forest_bits_per_row": held.dl_bits_per_row,
                           "saving_pct": 100 * (1 - held.dl_bits_per_row / held.flat_dl_bits_per_row)
                           if held.flat_dl_bits_per_row else 0.0}
    return forest, out


def table(s: dict) -> str:
    rows = [("edges (children)", f"{s['edges']:,} in {s['trees']:,} trees, depth <= {s['max_depth']}"),
            ("fit on", f"{s['fit_rows']:,} rows ({s['candidates']:,} candidate edges)"),
            ("predicted saving (fit rows)", f"{s['saving_bits_per_row']:.3f} bits/row"),
            ("forest model bits", f"{s['model_bits']:,} ({s['model_bits'] / max(s['fit_rows'], 1):.3f} bits/row)")]
    if s["edges"]:
        rows.append(("strictness (in parent)", f"median {s['strictness_median']:.3f}, mean "
                                               f"{s['strictness_mean']:.3f}; {s['strict_children']:,} strict"))
    if "held_out" in s:
        h = s["held_out"]
        rows += [("held-out rows", f"{h['rows']:,}"),
                 ("held-out DL flat", f"{h['flat_bits_per_row']:.2f} bits/row"),
                 ("held-out DL with forest", f"{h['forest_bits_per_row']:.2f} bits/row ({-h['saving_pct']:+.2f} %)")]
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def run(args) -> int:
    sae = load_sae(args)
    step = step_from(args, sae)
    forest, summary = report(open_acts(args), sae, step, args.fit, args.candidates,
                             show_progress(args))
    if args.output and distributed.is_main():
        with atomic_file(args.output) as f:
            np.save(f, forest.parents)
        summary["output"] = args.output
    print(json.dumps(summary) if args.json else table(summary))
    return 0
