"""``mdlsae demo``: the built-in demonstration on generated toy data (see mdlsae.demo)."""

from __future__ import annotations

import sys

from . import add_progress_flag, positive_float


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the built-in demonstration on toy data (under a minute)")
    p.add_argument("--step", type=positive_float, default=0.05, help="quantization step (default 0.05)")
    p.add_argument("--seed", type=int, default=0)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..demo import run_demo

    run_demo(step=args.step, seed=args.seed, progress=args.progress and sys.stderr.isatty())
    return 0
