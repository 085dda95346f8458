"""``mdlsae inspect``: sizes of a ``.mdl`` file beside the entropy estimate of its codes."""

from __future__ import annotations

import json

import numpy as np

from ..codec.api import inspect
from ..codec.container import open_mdl
from ..fileio import atomic_file


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a .mdl file's bits beside the DL estimate")
    p.add_argument("file", metavar="FILE.mdl", help="a .mdl file, or the folder `encode --sharded` writes")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--steps-out", metavar="STEPS.npy",
                   help="save the file's quantization step(s) as float32 .npy ([d_sae] when per feature)")
    p.set_defaults(run=run)


def run(args) -> int:
    info = inspect(args.file)
    if args.steps_out:
        with open_mdl(args.file) as f, atomic_file(args.steps_out) as out:
            np.save(out, np.asarray(f.step, dtype=np.float32))
    print(json.dumps(info.to_dict()) if args.json else info.table())
    return 0
