"""The ``mdlsae`` command line. Each subcommand lives in ``mdlsae.commands.<name>`` with
``add_parser(subparsers)`` and ``run(args) -> int``; this module wires them up and turns every
user-fixable error into one ``mdlsae: error: ...`` line and a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from . import distributed
from .errors import MdlsaeError

COMMANDS = ["dl", "encode", "decode", "inspect", "select", "sweep", "parents", "train", "toy", "extract", "import_",
            "demo", "info"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mdlsae",
        description="Measure sparse autoencoders in bits: description length of SAE codes of "
                    "neural activations, with real arithmetic-coded files.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"mdlsae.commands.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    where = ""  # "rank N: " under torch.distributed
    try:
        if getattr(args, "memory", None) is not None:
            from .budget import set_budget

            set_budget(args.memory)
        if hasattr(args, "distributed") and distributed.init(args.distributed):
            where = f"rank {distributed.rank()}: "
            if not distributed.is_main():  # rank 0 prints the results
                sys.stdout = open(os.devnull, "w")
        return int(args.run(args) or 0)
    except distributed.PeerFailed as e:  # the failing rank has said why
        if distributed.is_main():
            print(f"mdlsae: error: {where}{e}", file=sys.stderr)
        return 1
    except MdlsaeError as e:
        print(f"mdlsae: error: {where}{e}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"mdlsae: error: {where}{e.strerror or e}: {e.filename}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"mdlsae: {where}interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
