"""The ``mdlsae`` command line. Each subcommand lives in ``mdlsae.commands.<name>`` with
``add_parser(subparsers)`` and ``run(args) -> int``; this module wires them up and turns every
user-fixable error into one ``mdlsae: error: ...`` line and a non-zero exit code."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading

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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python runs next: the same unwinding as Ctrl-C (temporary files and
    spills removed, a training checkpoint saved), so neither leaves a partial output."""


def _terminate(signum, frame):
    raise Terminated()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)  # also how torchrun stops the other ranks when one dies
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
    except KeyboardInterrupt as e:
        how, code = ("terminated (SIGTERM)", 143) if isinstance(e, Terminated) else ("interrupted", 130)
        print(f"mdlsae: {where}{how}; no partial output was written" + _resume_hint(args), file=sys.stderr)
        return code


def _resume_hint(args) -> str:
    ckpt = getattr(args, "checkpoint_path", None)
    return f"; training progress is saved in {ckpt} (rerun with --resume)" if ckpt and ckpt.is_file() else ""


if __name__ == "__main__":
    sys.exit(main())
