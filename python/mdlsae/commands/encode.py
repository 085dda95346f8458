"""``mdlsae encode``: code an activation file with an SAE into a ``.mdl`` file."""

from __future__ import annotations

import json

from . import (add_acts_argument, add_device_flag, add_distributed_flag, add_dtype_flag, add_memory_flag,
               add_progress_flag, load_sae, open_acts, positive_int, show_progress)
from ..codec.api import encode
from .dl import add_parents_argument, add_step_arguments, resolve_parents, step_from


def add_parser(sub) -> None:
    p = sub.add_parser("encode", help="encode activations into a .mdl file with an arithmetic coder",
                       description="Quantize the SAE latents of ACTS with one global STEP (--step) or one "
                                   "step per feature (--steps, e.g. from `mdlsae select --per-feature "
                                   "--steps-out`) and code them, feature-major with exact geometric gap "
                                   "models, into FILE.mdl (the SAE runs once per row; its codes are kept between "
                                   "the counting and the coding pass, within --memory).")
    add_acts_argument(p)
    p.add_argument("--sae", required=True, metavar="SAE_DIR", help="SAE directory in the SAELens layout")
    p.add_argument("-o", "--output", required=True, metavar="FILE.mdl", help="output file (written atomically)")
    add_step_arguments(p, "stored in the file's header")
    add_parents_argument(p)
    p.add_argument("--chunk-rows", type=positive_int, default=None,
                   help="rows per independently decodable chunk (default: the power of two, at least 16,384, "
                        "that gives >= 2 Mbit of payload per chunk, from the first rows' DL estimate)")
    p.add_argument("--sharded", action="store_true",
                   help="write FILE.mdl as a folder: one .mdl per shard file of ACTS, all coded with the entropy model "
                        "of all rows, and a manifest.json; decode and inspect read it as one file")
    p.add_argument("--features-per-stream", type=int, default=0, metavar="F",
                   help="features per independent rANS stream within a chunk (default 0: one stream per chunk); "
                        "streams are what the GPU coder runs in parallel (e.g. 256 with --device cuda), at "
                        "~200 bits each")
    add_device_flag(p)
    p.add_argument("--json", action="store_true", help="print the file summary as JSON")
    add_memory_flag(p)
    add_dtype_flag(p)
    add_distributed_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    sae = load_sae(args)
    step = step_from(args, sae)
    acts, progress = open_acts(args), show_progress(args)
    parents, _ = resolve_parents(args.parents, acts, sae, step, progress)
    info = encode(acts, sae, args.output, step, parents=parents, chunk_rows=args.chunk_rows,
                  features_per_stream=args.features_per_stream, progress=progress, sharded=args.sharded)
    print(json.dumps(info.to_dict()) if args.json else info.table())
    return 0
