"""``mdlsae train``: train an SAE on an activation file and save it in the SAELens layout."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import (add_acts_argument, add_memory_flag, add_progress_flag, add_threads_flag, open_acts, positive_float,
               positive_int, set_threads, show_progress)
from ..errors import expect


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train an SAE (topk, batchtopk, matryoshka, jumprelu, relu, tree, batchtree) "
                                     "on activations",
                       description="Train an SAE on ACTS with defaults that work without tuning; "
                                   "k is the L0 (exact for topk, mean for batchtopk and batchtree, target "
                                   "for jumprelu and relu, the roots for tree). Progress is checkpointed to SAE_DIR.ckpt "
                                   "(periodically and on Ctrl-C); --resume continues from it.")
    add_acts_argument(p)
    p.add_argument("--arch", choices=["topk", "batchtopk", "matryoshka", "jumprelu", "relu", "tree", "batchtree"],
                   default="topk",
                   help="matryoshka: BatchTopK whose nested prefixes of the dictionary each reconstruct "
                        "(Bussmann et al. 2025); batchtopk and matryoshka are saved as JumpReLU. tree: a "
                        "strict-tree SAE, k roots kept by TopK and below each kept latent its strongest "
                        "child (a child fires only with its parent); its forest is saved with it, so dl, "
                        "encode and select code children given their parents without a parents file. "
                        "batchtree: the same tree under a batch-level budget of k latents per row on "
                        "average (BatchTopK over its candidates), saved with one calibrated threshold "
                        "instead of k")
    p.add_argument("--d-sae", type=positive_int, metavar="D", help="number of latents (required without --init)")
    p.add_argument("--k", type=positive_int, help="L0, for tree the roots per row (default min(32, d_in/8))")
    p.add_argument("-o", "--out", required=True, metavar="SAE_DIR", help="output SAE directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=positive_float, help="passes over the data (default: enough for 1.5M rows)")
    p.add_argument("--batch-size", type=positive_int, default=256)
    p.add_argument("--lr", type=positive_float, help="peak Adam learning rate (default from D)")
    p.add_argument("--b-dec-init", choices=["median", "mean"], default="median")
    p.add_argument("--no-normalize", dest="normalize", action="store_false",
                   help="train on raw activations instead of scaled ones")
    p.add_argument("--groups", type=group_sizes, metavar="G1,G2,...",
                   help="matryoshka group sizes, summing to --d-sae (default D/16,D/16,D/8,D/4,D/2)")
    p.add_argument("--branching", type=group_sizes, metavar="B1,B2,...",
                   help="tree from scratch: children of every root, of every child, ... (default 4: D/5 roots "
                        "with 4 children each); D must be a multiple of 1+B1+B1*B2+...")
    p.add_argument("--init", metavar="SAE_DIR", help="start from this SAE (the same architecture, or for --arch "
                                                    "tree or batchtree a topk SAE together with --parents)")
    p.add_argument("--parents", metavar="PARENTS.npy",
                   help="--arch tree (or batchtree) --init FLAT: the forest to impose on FLAT's latents, e.g. from "
                        "`mdlsae parents --sae FLAT -o PARENTS.npy`")
    p.add_argument("--aux-k", type=int, help="AuxK dead latents per row (default d_in/2; 0: off)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    p.add_argument("--resume", action="store_true", help="continue from SAE_DIR.ckpt")
    p.add_argument("--checkpoint-minutes", type=positive_float, default=5.0,
                   help="minutes between checkpoints (default 5)")
    p.add_argument("--json", action="store_true", help="print the final statistics as JSON")
    add_threads_flag(p)
    add_memory_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


TREES = ("tree", "batchtree")


def group_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def start_sae(args):
    """The SAE training starts from (--init), as the architecture trained: a flat topk SAE
    with --parents becomes a tree with that forest."""
    if args.init is None:
        return None
    from ..models.sae import SAE
    from ..models.train.objectives import tree_from
    from .dl import load_parents

    sae = SAE.load(args.init)
    if args.arch in TREES and sae.cfg.architecture != "tree":
        expect(args.parents is not None, f"--init {args.init} is a {sae.cfg.architecture} SAE: --arch {args.arch} "
                                         "needs its forest too (--parents PARENTS.npy, from `mdlsae parents`)")
        parents = load_parents(args.parents)
        # batchtree: k is the budget, not the roots; the starting tree keeps as many as it has
        k = args.k if args.arch == "tree" else min(sae.cfg.k or 1, int((parents < 0).sum()))
        return tree_from(sae, parents, k)
    expect(args.parents is None, f"--init {args.init} is already a tree SAE with its own forest; drop --parents")
    return sae


def run(args) -> int:
    from ..models.train import TrainConfig, train

    set_threads(args.threads)
    expect(args.aux_k is None or args.aux_k >= 0, f"--aux-k must be >= 0, got {args.aux_k}")
    expect(args.groups is None or args.arch == "matryoshka", "--groups is for --arch matryoshka")
    expect(args.branching is None or (args.arch in TREES and args.init is None),
           "--branching is for --arch tree or batchtree trained from scratch (with --init the forest is given)")
    expect(args.parents is None or (args.arch in TREES and args.init is not None),
           "--parents is for --arch tree or batchtree --init FLAT_SAE")
    expect((args.d_sae is None) != (args.init is None), "give --d-sae (a new SAE) or --init SAE_DIR (its width), "
                                                        "not both" if args.d_sae else "give --d-sae or --init")
    init = start_sae(args)
    cfg = TrainConfig(architecture=args.arch, d_sae=init.d_sae if init is not None else args.d_sae, k=args.k,
                      epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, b_dec_init=args.b_dec_init,
                      normalize=args.normalize, aux_k=args.aux_k, seed=args.seed, device=args.device,
                      groups=args.groups, branching=args.branching)
    ckpt = Path(str(Path(args.out)) + ".ckpt")
    expect(not args.resume or ckpt.is_file(), f"--resume: no checkpoint {str(ckpt)!r} to resume from")
    args.checkpoint_path = ckpt  # named by the CLI's message when the run is interrupted
    res = train(open_acts(args), cfg, progress=show_progress(args), init=init, checkpoint=ckpt,
                resume=args.resume, checkpoint_every_s=60 * args.checkpoint_minutes)
    res.sae.cfg.extra["mdlsae_training"] = {"acts": str(args.acts), "arch": args.arch, "seed": args.seed,
                                            **{k: v for k, v in res.stats.items()}}
    res.sae.save(args.out)
    ckpt.unlink(missing_ok=True)
    s = res.stats
    if args.json:
        print(json.dumps(s))
    else:
        print(f"trained {args.arch} D={cfg.d_sae} k={s['k']} in {s['seconds']:.1f} s "
              f"({s['steps']} steps, {s['epochs']:.1f} epochs, {s['rows_per_s']:,.0f} rows/s) -> {args.out}")
        print(f"FVU {s['fvu']:.4f}  L0 {s['l0']:.2f}  dead {s['dead_frac']:.3f}  dense {s['dense_frac']:.3f}  "
              f"(on {s['eval_rows']:,} rows)")
    return 0
