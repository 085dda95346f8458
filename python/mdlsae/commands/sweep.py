"""``mdlsae sweep``: train a grid of SAEs, measure each at a tolerance, save table and plots."""

from __future__ import annotations


from . import (add_memory_flag, add_metric_arguments, add_progress_flag, metric_from, positive_float, positive_int,
               show_progress)
from ..errors import MdlsaeError, expect


def add_parser(sub) -> None:
    p = sub.add_parser(
        "sweep", help="train widths x k (x architecture) SAEs and compare their DL at a tolerance",
        description="Train every SAE of the grid on TRAIN, find each one's effective precision on the held-out "
                    "EVAL rows at --tolerance, and write OUT/results.json, OUT/results.csv and plots: DL vs "
                    "width, rate-distortion curves, the L0 frontier, two-part bits vs N (and decoder features "
                    "as images with --mnist or --image-shape). Trained SAEs are kept in OUT/saes and reused.")
    p.add_argument("train", metavar="TRAIN", nargs="?", help="training activations (.npy or .safetensors)")
    p.add_argument("--eval", metavar="EVAL", help="held-out activations the SAEs are measured on")
    p.add_argument("--mnist", metavar="DIR", help="use MNIST from DIR (the four idx files): train split to "
                                                  "train, test split to evaluate, 28x28 feature images")
    p.add_argument("--widths", required=True, nargs="+", type=positive_int, metavar="D")
    p.add_argument("--k", required=True, nargs="+", type=positive_int, metavar="K")
    p.add_argument("--arch", nargs="+", default=["topk"], metavar="ARCH", help="architectures (default topk)")
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", required=True, type=positive_float, metavar="EPS")
    p.add_argument("--per-feature", action="store_true", help="also allocate per-feature steps")
    p.add_argument("--max-rows", type=positive_int, help="evaluate on the first N held-out rows only")
    p.add_argument("--parents", choices=["auto"],
                   help="'auto': measure each SAE conditional on its own parent forest (mdlsae parents), the "
                        "two-part total paying for it")
    p.add_argument("--decoder-bits", type=int, choices=(0, 8, 16, 32), default=16, metavar="B",
                   help="bits per decoder weight counted in the model bits: 8, 16 (default) or 32; 0: not counted")
    p.add_argument("--image-shape", nargs=2, type=positive_int, metavar=("H", "W"),
                   help="draw decoder rows as H x W images")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    add_metric_arguments(p)
    add_memory_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    from ..studies.sweep import SweepConfig, run_sweep

    image_shape = tuple(args.image_shape) if args.image_shape else None
    if args.mnist:
        if args.train or args.eval:
            raise MdlsaeError("give either --mnist DIR or TRAIN --eval EVAL, not both")
        from ..data.mnist import IMAGE_SHAPE, load_mnist

        train, evaluate, dataset = load_mnist(args.mnist, "train")[0], load_mnist(args.mnist, "test")[0], "MNIST"
        image_shape = image_shape or IMAGE_SHAPE
    else:
        if not (args.train and args.eval):
            raise MdlsaeError("sweep needs TRAIN and --eval EVAL activation files (or --mnist DIR)")
        train, evaluate, dataset = args.train, args.eval, args.train
    progress = show_progress(args)
    metric = args.metric
    if metric not in ("mse", "fvu"):
        from ..data.acts import Activations

        expect(not args.mnist, f"--metric {metric} needs activations of a transformer, not --mnist")
        metric = metric_from(args, Activations(evaluate), progress, args.max_rows)
    cfg = SweepConfig(widths=args.widths, ks=args.k, tolerance=args.tolerance, architectures=args.arch,
                      metric=args.metric, epochs=args.epochs, seed=args.seed, per_feature=args.per_feature,
                      max_rows=args.max_rows, decoder_precision=args.decoder_bits, parents=args.parents)
    res = run_sweep(train, evaluate, cfg, args.out, image_shape, dataset, progress=progress, metric=metric)
    if not isinstance(metric, str):
        metric.close()
    print(f"{len(res['candidates'])} SAEs, {args.metric} <= {args.tolerance:g} on {res['eval_rows']:,} held-out rows")
    for b in res["best_per_width"]:
        print(f"  D={b['d_sae']:<6} best k={b['k']:<4} {b['dl_bits_per_row']:9.2f} data bits/row  "
              f"{b['total_bits_per_row']:10.2f} two-part bits/row")
    x = res["rd_crossings"]
    print(f"MDL optimum: {res['chosen']}; rate-distortion curves crossing: {x['crossing']} of {x['pairs']} pairs")
    print(f"wrote {args.out}/results.json, results.csv and plots")
    return 0
