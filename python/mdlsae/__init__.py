"""mdlsae: measure sparse autoencoders in bits.

Encodes SAE codes of activation datasets with an exact arithmetic coder, reports their
description length (DL) beside the entropy estimate, and selects the SAE with the minimal DL
at an error tolerance. See README.md and DESIGN §1–2 for the definitions.
"""

from __future__ import annotations

from ._native import _C, _C_cuda
from ._version import __version__
from .measure.codes import SparseCodes
from .errors import MdlsaeError
from .measure.kernels import Histogram, select_quantize
from .models.sae import SAE, SAEConfig


def cuda_available() -> bool:
    """True when the CUDA kernels were compiled and a CUDA device is present."""
    return _C_cuda is not None and _C_cuda.device_count() > 0


def build_info() -> dict:
    """What was compiled: CPU kernels, CUDA kernels (if any), compiler, threads."""
    info = dict(_C.build_info())
    info["version"] = __version__
    info["threads"] = _C.num_threads()
    info["cuda_compiled"] = _C_cuda is not None
    if _C_cuda is not None:
        info.update(_C_cuda.build_info())
        info["cuda_devices"] = [_C_cuda.device_name(i) for i in range(_C_cuda.device_count())]
    else:
        info["cuda_kernels"] = ()
        info["cuda_devices"] = []
    return info


def set_num_threads(n: int) -> None:
    """Worker threads of the CPU kernels (0 = all hardware threads)."""
    _C.set_num_threads(int(n))


__all__ = ["SAE", "SAEConfig", "SparseCodes", "Histogram", "MdlsaeError", "select_quantize",
           "build_info", "cuda_available", "set_num_threads", "__version__"]
