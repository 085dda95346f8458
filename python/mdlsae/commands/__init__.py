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


def add_distributed_flag(p: argparse.ArgumentParser) -> None:
    """``--distributed``: run on the ranks ``torchrun`` started (found without the flag, too)."""
    p.add_argument("--distributed", action="store_true",
                   help="split the rows across the processes torchrun starts (gloo on CPU, NCCL on GPU): "
                        "`torchrun --nproc-per-node N -m mdlsae.cli ...`; results are those of one process. "
                        "Detected from torchrun's environment without the flag; with it, insist on it")


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars when asked for and stderr is a terminal (only rank 0 draws them)."""
    import sys

    return bool(args.progress) and sys.stderr.isatty()


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


def add_dtype_flag(p: argparse.ArgumentParser) -> None:
    """``--dtype``: the encoder GEMM's precision (mdlsae.models.sae.SAE.set_compute_dtype)."""
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="precision of the encoder GEMM (default float32). bfloat16/float16 halve the "
                        "pre-activations' memory and speed up GPUs (on CPUs without half-precision units "
                        "they are much slower), but a latent whose pre-activation "
                        "rounds across a TopK, threshold or quantization boundary gets another code "
                        "(bench/README.md: how often); an encoded file records the dtype")


def load_sae(args: argparse.Namespace):
    """The SAE named by ``--sae``, in the ``--dtype`` of ``add_dtype_flag``."""
    from ..models.sae import SAE

    return SAE.load(args.sae).set_compute_dtype(getattr(args, "dtype", "float32"))
