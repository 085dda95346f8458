"""``mdlsae select``: the MDL choice among candidate SAEs at a loss tolerance (seed 002 §6)."""

from __future__ import annotations

import json
import sys

import numpy as np

from . import (add_acts_argument, add_device_flag, add_distributed_flag, add_memory_flag, add_metric_arguments,
               add_progress_flag, device_from, metric_from, open_acts, positive_float, positive_int,
               show_progress)
from .. import distributed
from ..fileio import atomic_file
from ..selection.select import CRITERIA, select_sae


def add_parser(sub) -> None:
    p = sub.add_parser(
        "select", help="choose the SAE with the smallest DL among those meeting a loss tolerance",
        description="For each SAE, find the coarsest quantization step whose reconstruction loss on ACTS "
                    "stays within EPS (its effective precision) and the DL there; choose the SAE with the "
                    "smallest DL among those meeting EPS. With --per-feature, steps are allocated per "
                    "feature to shrink the DL further at the same EPS.")
    add_acts_argument(p, "held-out activations")
    p.add_argument("--sae", required=True, nargs="+", metavar="DIR", help="candidate SAE directories")
    p.add_argument("--tolerance", required=True, type=positive_float, metavar="EPS",
                   help="largest acceptable loss of the quantized reconstruction")
    p.add_argument("--per-feature", action="store_true", help="allocate a quantization step per feature")
    p.add_argument("--criterion", choices=CRITERIA, default="data",
                   help="rank by data bits per row (large-N DL, default) or two-part total bits per row")
    p.add_argument("--decoder-bits", type=int, choices=(0, 8, 16, 32), default=16, metavar="B",
                   help="bits per decoder weight counted in the model bits: 8, 16 (default) or 32; 0: not counted")
    p.add_argument("--max-rows", type=positive_int, help="evaluate on the first N rows only (default all)")
    p.add_argument("--parents", choices=["auto"],
                   help="'auto': measure every candidate conditional on its own parent forest (found on its codes "
                        "at its step), the two-part total paying for the forest")
    p.add_argument("--steps-out", metavar="STEPS.npy", help="save the chosen SAE's step(s) as float32 .npy")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_metric_arguments(p)
    add_device_flag(p)
    add_memory_flag(p)
    add_distributed_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    acts, progress = open_acts(args), show_progress(args)
    metric = metric_from(args, acts, progress, args.max_rows)
    sel = select_sae(acts, args.sae, args.tolerance, metric, args.per_feature, args.criterion,
                     args.max_rows, args.decoder_bits, progress=progress, parents=args.parents,
                     device=device_from(args.device))
    if not isinstance(metric, str):
        metric.close()
    chosen = sel.chosen
    if args.steps_out and chosen is not None and distributed.is_main():
        with atomic_file(args.steps_out) as f:
            np.save(f, np.asarray(chosen.step, dtype=np.float32))
    print(json.dumps(sel.to_dict()) if args.json else sel.table())
    if chosen is None and distributed.is_main():
        print(f"mdlsae: no candidate meets {args.metric} <= {args.tolerance:g}", file=sys.stderr)
    return 0 if chosen is not None else 1
