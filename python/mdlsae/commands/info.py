"""``mdlsae info``: what was compiled (CPU and CUDA kernels, compiler, threads, devices)."""

from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="show what the native core was built with")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args) -> int:
    from .. import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, default=list))
    else:
        w = max(map(len, info))
        for k, v in info.items():
            print(f"{k:<{w}}  {', '.join(map(str, v)) if isinstance(v, (list, tuple)) else v}")
    return 0
