"""``mdlsae toy``: generate toy activations with ground-truth features (``toy make``) and score
an SAE's recovery of them by mean max cosine similarity (``toy mmcs``)."""

from __future__ import annotations

import json
from pathlib import Path

from . import add_progress_flag, show_progress, positive_float, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser("toy", help="toy activations with known features, and the MMCS recovery score")
    tsub = p.add_subparsers(dest="toy_command", metavar="{make,mmcs}", required=True)
    m = tsub.add_parser("make", help="write toy activations (.npy) and their ground truth (.safetensors)")
    m.add_argument("-o", "--out", required=True, metavar="ACTS.npy")
    m.add_argument("--truth", metavar="TRUTH.safetensors",
                   help="ground-truth file (default: ACTS.truth.safetensors beside the activations)")
    m.add_argument("--rows", type=positive_int, default=120_000)
    m.add_argument("--d", type=positive_int, default=64, help="activation dimension")
    m.add_argument("--features", type=positive_int, default=256, help="number of true features")
    m.add_argument("--active", type=positive_float, default=4.0, help="mean active base features per row")
    m.add_argument("--exponent", type=float, default=0.5, help="power law of the firing rates")
    m.add_argument("--noise", type=float, default=0.0, help="std of Gaussian noise")
    m.add_argument("--correlation", type=float, default=0.0, help="correlation within groups of base features")
    m.add_argument("--group", type=positive_int, default=4, help="size of the correlated groups")
    m.add_argument("--parents", type=int, default=0, help="base features that get children (hierarchy)")
    m.add_argument("--children", type=positive_int, default=2, help="children per parent")
    m.add_argument("--levels", type=positive_int, default=1,
                   help="depth of the planted trees (2: every child has children of its own)")
    m.add_argument("--child-rate", type=float, default=0.5, help="P(a child fires | its parent fires)")
    m.add_argument("--child-leak", type=float, default=0.0,
                   help="P(a child fires | its parent is silent): 0 (default) plants strict trees, more plants loose "
                        "ones that `mdlsae parents` must still find")
    m.add_argument("--and-features", type=int, default=0, help="AND-composite features")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--float16", action="store_true", help="store float16 activations")
    add_progress_flag(m)
    m.set_defaults(run=run_make)
    s = tsub.add_parser("mmcs", help="mean max cosine similarity of an SAE's decoder to the true features")
    s.add_argument("--sae", required=True, metavar="SAE_DIR")
    s.add_argument("--truth", required=True, metavar="TRUTH", help="truth .safetensors (or features .npy)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=run_mmcs)


def run_make(args) -> int:
    import numpy as np

    from ..data.toy import ToySpec, write_toy

    spec = ToySpec(d=args.d, n_features=args.features, mean_active=args.active, exponent=args.exponent,
                   noise=args.noise, correlation=args.correlation, group=args.group, n_parents=args.parents,
                   children=args.children, child_rate=args.child_rate, child_leak=args.child_leak,
                   levels=args.levels, n_and=args.and_features)
    out = Path(args.out)
    truth = args.truth or str(out.with_name(out.name.removesuffix(".npy") + ".truth.safetensors"))
    write_toy(out, args.rows, spec, seed=args.seed, truth_path=truth,
              dtype=np.float16 if args.float16 else np.float32, progress=show_progress(args))
    print(f"wrote {args.rows:,} x {args.d} toy activations to {out} and the ground truth to {truth}")
    return 0


def run_mmcs(args) -> int:
    from ..data.toy import load_truth, max_cosine
    from ..models.sae import SAE

    cos = max_cosine(SAE.load(args.sae), load_truth(args.truth))
    res = {"mmcs": float(cos.mean()), "recovered_0.9": float((cos > 0.9).mean()), "n_true": len(cos)}
    print(json.dumps(res) if args.json else
          f"MMCS {res['mmcs']:.4f}  ({100 * res['recovered_0.9']:.1f} % of {len(cos)} true features at cos > 0.9)")
    return 0
