"""torch.distributed for the streaming commands (DESIGN §6): started with ``torchrun``, each rank
scans a contiguous share of the rows, integer counts are summed exactly across ranks (int64),
and results do not depend on the number of ranks. This module holds the few collectives that
need: starting the process group (gloo on CPU, NCCL where CUDA is present), a rank's share of
the rows, exact sums, gathers, and ``agreed()``, which turns a failure on any rank into an error
on every rank (instead of the others waiting forever in their next collective).

With one process (or no process group) every function is the identity and costs nothing.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from typing import Iterator

import numpy as np
import torch

from ._native import _C
from .errors import MdlsaeError

_TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class PeerFailed(MdlsaeError):
    """Raised on the ranks that did not fail when another one did (that one reports its error)."""


def _dist():
    return torch.distributed if torch.distributed.is_available() else None


def init(required: bool = False) -> bool:
    """Join the process group ``torchrun`` describes in the environment, if any (or if
    ``required``, the ``--distributed`` flag, insist on one). True when running on several ranks."""
    d = _dist()
    if d is not None and d.is_initialized():
        return active()
    launched = all(v in os.environ for v in _TORCHRUN_ENV)
    if not launched:
        if required:
            missing = ", ".join(v for v in _TORCHRUN_ENV if v not in os.environ)
            raise MdlsaeError(f"--distributed needs the environment torchrun sets ({missing} unset); start with "
                              "`torchrun --nproc-per-node N -m mdlsae.cli ...`")
        return False
    if d is None:
        raise MdlsaeError("this torch was built without torch.distributed")
    if int(os.environ["WORLD_SIZE"]) == 1 and not required:
        return False
    # NCCL needs a GPU of its own per rank on the node; the summed counts are small host arrays,
    # so gloo serves everywhere else
    per_node = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"]))
    backend = "nccl" if torch.cuda.is_available() and torch.cuda.device_count() >= per_node else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    d.init_process_group(backend)
    atexit.register(_close)
    # the native kernels take torch's thread count (torchrun sets OMP_NUM_THREADS, 1 by default)
    # rather than every core, which the ranks share
    _C.set_num_threads(torch.get_num_threads())
    return active()


def _close() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def active() -> bool:
    """True when a process group of more than one rank is running."""
    d = _dist()
    return d is not None and d.is_initialized() and d.get_world_size() > 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that prints, shows progress and writes outputs."""
    return rank() == 0


def share(n_rows: int, align: int = 1, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Rows [start, stop) of rank ``r`` of ``w`` (default: this rank of this group):
    contiguous, in rank order, split on multiples of ``align`` (e.g. a file's chunk rows, so
    that no chunk straddles two ranks).

    >>> [share(10, 4, r, 2) for r in range(2)], share(10, 4)
    ([(0, 4), (4, 10)], (0, 10))
    """
    return share_at(list(range(0, n_rows, max(1, align))) + [n_rows], r, w)


def share_at(bounds, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Like :func:`share`, split only at ``bounds`` (increasing row numbers from 0 to the end,
    e.g. the first rows of a dataset's shard files): an equal number of pieces per rank.

    >>> [share_at([0, 5, 7, 20], r, 2) for r in range(2)]
    [(0, 5), (5, 20)]
    """
    i, j = pieces(len(bounds) - 1, r, w)
    return int(bounds[i]), int(bounds[j])


def pieces(units: int, r: int | None = None, w: int | None = None) -> tuple[int, int]:
    """Items [i, j) of ``units`` for rank ``r`` of ``w``: contiguous, in rank order, as even as can be."""
    w = world() if w is None else w
    r = rank() if r is None else r
    return r * units // w, (r + 1) * units // w


def _device() -> torch.device:
    if active() and torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _all_reduce(a: np.ndarray, dtype: torch.dtype) -> np.ndarray:
    if not active():
        return a
    t = torch.as_tensor(np.ascontiguousarray(a)).to(dtype=dtype, device=_device())
    torch.distributed.all_reduce(t)
    return t.cpu().numpy()


def sum_int(a) -> np.ndarray:
    """Exact elementwise sum over ranks of integer counts (int64)."""
    return _all_reduce(np.asarray(a, dtype=np.int64), torch.int64)


def sum_float(a) -> np.ndarray:
    """Elementwise sum over ranks in float64 (rounding may differ from one process's sum)."""
    return _all_reduce(np.asarray(a, dtype=np.float64), torch.float64)


def gather(obj) -> list:
    """Every rank's ``obj`` (picklable), in rank order, on every rank."""
    if not active():
        return [obj]
    out = [None] * world()
    torch.distributed.all_gather_object(out, obj)
    return out


def broadcast(obj):
    """Rank 0's ``obj`` on every rank."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def agreed(what: str) -> Iterator[None]:
    """Run a block that does no collectives, then agree on whether every rank succeeded: the
    failing rank re-raises its error, the others raise :class:`PeerFailed` naming it. Put a
    block's local work inside, its collectives after it."""
    error = None
    try:
        yield
    except Exception as e:  # noqa: BLE001 - re-raised below, after the other ranks know
        if not active():
            raise
        error = e
    if not active():
        return
    failed = np.flatnonzero(sum_int(np.eye(world(), dtype=np.int64)[rank()] * (error is not None)))
    if error is not None:
        raise error
    if len(failed):
        raise PeerFailed(f"{what} stopped: rank {', '.join(map(str, failed))} failed (its error is reported above)")
