"""``mdlsae dl``: the description-length estimate of an SAE's quantized codes of a dataset."""

from __future__ import annotations

import json
import sys

import numpy as np

from . import add_progress_flag, positive_float, positive_int
from ..errors import MdlsaeError
from ..measure import DEFAULT_BATCH_ROWS, measure_dl
from ..sae import SAE


def add_parser(sub) -> None:
    p = sub.add_parser("dl", help="description length of an SAE's codes of an activation file",
                       description="Encode ACTS with the SAE, quantize the latents with STEP and report "
                                   "the DL estimate (DESIGN §2) beside L0, MSE, FVU and reference costs.")
    p.add_argument("acts", metavar="ACTS", help="activations [N, d_in]: .npy (float32/float16) or "
                                                ".safetensors with one 2-D tensor")
    p.add_argument("--sae", required=True, metavar="SAE_DIR", help="SAE directory in the SAELens layout")
    p.add_argument("--step", required=True, type=positive_float, help="quantization step of the latents")
    p.add_argument("--parents", metavar="PARENTS.npy",
                   help="int64 [d_sae] forest: -1 for roots; children are coded given their parent")
    p.add_argument("--batch-rows", type=positive_int, default=DEFAULT_BATCH_ROWS, help="rows per batch")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    add_progress_flag(p)
    p.set_defaults(run=run)


def load_parents(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise MdlsaeError(f"parents file {path!r} does not exist") from None
    except ValueError as e:
        raise MdlsaeError(f"{path}: not a readable .npy file ({e})") from None


def run(args) -> int:
    sae = SAE.load(args.sae)
    rep = measure_dl(args.acts, sae, args.step, parents=load_parents(args.parents),
                     batch_rows=args.batch_rows, progress=args.progress and sys.stderr.isatty(),
                     sae_name=args.sae)
    print(json.dumps(rep.to_dict()) if args.json else rep.table())
    return 0
