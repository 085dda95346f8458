"""``mdlsae demo``: the built-in demonstration on generated toy data (see mdlsae.demo)."""

from __future__ import annotations


from . import add_progress_flag, show_progress, positive_float


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the built-in demonstration on toy data (about a minute)",
                       description="Train TopK SAEs of several widths on toy data with a known number of "
                                   "features, compare them at the same error tolerance (each at its "
                                   "effective precision) by L0 and by description length, and encode the "
                                   "chosen SAE's held-out codes into a real .mdl file.")
    p.add_argument("--tolerance", type=positive_float, default=0.15, metavar="EPS",
                   help="largest fraction of variance unexplained on the held-out rows (default 0.15)")
    p.add_argument("--seed", type=int, default=0)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..studies.demo import run_demo

    res = run_demo(tolerance=args.tolerance, seed=args.seed, progress=show_progress(args))
    return 0 if res["by_dl"] is not None else 1
