"""``mdlsae train``: train an SAE on an activation file and save it in the SAELens layout."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import (add_acts_argument, add_memory_flag, add_progress_flag, add_threads_flag, open_acts, positive_float,
               positive_int, set_threads)
from ..errors import expect


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train an SAE (topk, batchtopk, jumprelu, relu) on activations",
                       description="Train an SAE on ACTS with defaults that work without tuning; "
                                   "k is the L0 (exact for topk, mean for batchtopk, target for "
                                   "jumprelu and relu). Progress is checkpointed to SAE_DIR.ckpt "
                                   "(periodically and on Ctrl-C); --resume continues from it.")
    add_acts_argument(p)
    p.add_argument("--arch", choices=["topk", "batchtopk", "matryoshka", "jumprelu", "relu"], default="topk",
                   help="matryoshka: BatchTopK whose nested prefixes of the dictionary each reconstruct "
                        "(Bussmann et al. 2025); batchtopk and matryoshka are saved as JumpReLU")
    p.add_argument("--d-sae", type=positive_int, required=True, metavar="D", help="number of latents")
    p.add_argument("--k", type=positive_int, help="L0 (default min(32, d_in/8))")
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


def group_sizes(text: str) -> list[int]:
    try:
        sizes = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers, got {text!r}")
    return sizes


def run(args) -> int:
    from ..models.train import TrainConfig, train

    set_threads(args.threads)
    expect(args.aux_k is None or args.aux_k >= 0, f"--aux-k must be >= 0, got {args.aux_k}")
    expect(args.groups is None or args.arch == "matryoshka", "--groups is for --arch matryoshka")
    cfg = TrainConfig(architecture=args.arch, d_sae=args.d_sae, k=args.k, epochs=args.epochs,
                      batch_size=args.batch_size, lr=args.lr, b_dec_init=args.b_dec_init,
                      normalize=args.normalize, aux_k=args.aux_k, seed=args.seed, device=args.device,
                      groups=args.groups)
    ckpt = Path(str(Path(args.out)) + ".ckpt")
    expect(not args.resume or ckpt.is_file(), f"--resume: no checkpoint {str(ckpt)!r} to resume from")
    res = train(open_acts(args), cfg, progress=args.progress and sys.stderr.isatty(), checkpoint=ckpt,
                resume=args.resume, checkpoint_every_s=60 * args.checkpoint_minutes)
    res.sae.cfg.extra["mdlsae_training"] = {"acts": str(args.acts), "arch": args.arch, "seed": args.seed,
                                            **{k: v for k, v in res.stats.items()}}
    res.sae.save(args.out)
    ckpt.unlink(missing_ok=True)
    s = res.stats
    if args.json:
        print(json.dumps(s))
    else:
        print(f"trained {args.arch} D={args.d_sae} k={s['k']} in {s['seconds']:.1f} s "
              f"({s['steps']} steps, {s['epochs']:.1f} epochs, {s['rows_per_s']:,.0f} rows/s) -> {args.out}")
        print(f"FVU {s['fvu']:.4f}  L0 {s['l0']:.2f}  dead {s['dead_frac']:.3f}  dense {s['dense_frac']:.3f}  "
              f"(on {s['eval_rows']:,} rows)")
    return 0
