"""``mdlsae inspect``: sizes of a ``.mdl`` file beside the entropy estimate of its codes."""

from __future__ import annotations

import json

from ..codec import inspect


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a .mdl file's bits beside the DL estimate")
    p.add_argument("file", metavar="FILE.mdl")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)


def run(args) -> int:
    info = inspect(args.file)
    print(json.dumps(info.to_dict()) if args.json else info.table())
    return 0
