"""Subcommands of the ``mdlsae`` CLI, one module each, and their shared argument types."""

from __future__ import annotations

import argparse
import math


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return v


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_progress_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="do not show progress bars")


def memory_size(text: str) -> str:
    from ..budget import parse_bytes
    from ..errors import MdlsaeError

    try:
        parse_bytes(text)
    except MdlsaeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def add_memory_flag(p: argparse.ArgumentParser) -> None:
    """``--memory``: the byte budget of every batch's dense intermediates (mdlsae.budget)."""
    p.add_argument("--memory", type=memory_size, metavar="BYTES",
                   help="memory budget for batches, e.g. 256M (default) or 4G; also the MDLSAE_MEMORY "
                        "environment variable. Peak memory is about the SAE's weights plus this")


def add_device_flag(p: argparse.ArgumentParser) -> None:
    """``--device``: where the SAE runs (read back with :func:`sae_on_device`)."""
    p.add_argument("--device", default="cpu", metavar="DEVICE",
                   help="where the SAE runs: cpu (default), cuda or cuda:N; on a GPU the GEMM, the fused select "
                        "kernel and the histograms run there (and, for encode and decode, the rANS coder), the "
                        "batches going to the device once each")


def device_from(text: str):
    """The torch device named by ``--device``, refusing one this machine lacks."""
    import torch

    from ..errors import MdlsaeError

    try:
        dev = torch.device(text)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise MdlsaeError(f"--device must be cpu, cuda or cuda:N, got {text!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MdlsaeError(f"--device {text}: this torch ({torch.__version__}) sees no CUDA device")
    return dev


def sae_on_device(sae, text: str):
    """``sae`` moved to the ``--device`` named by ``text``."""
    return sae.to(device_from(text))


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=positive_int,
                   help="torch CPU threads (default: torch's choice; 1 is fastest on a busy machine)")


def set_threads(n: int | None) -> None:
    if n is not None:
        import torch

        torch.set_num_threads(n)


def add_acts_argument(p: argparse.ArgumentParser, what: str = "activations") -> None:
    p.add_argument("acts", metavar="ACTS",
                   help=f"{what} [N, d_in] (or [..., d_in], read as rows): .npy (float32/16/64, "
                        "memory-mapped), .safetensors, .npz, .pt, a datasets .arrow shard, or a directory "
                        "or quoted glob of shards (SAELens's activation cache folder included)")
    p.add_argument("--key", help="which tensor (or Arrow column, e.g. a hook name) to read when ACTS holds "
                                 "several; default: the only one, or the only floating-point one")


def open_acts(args: argparse.Namespace):
    """The activations named by ``add_acts_argument``'s arguments."""
    from ..data.acts import Activations

    return Activations(args.acts, key=args.key)
