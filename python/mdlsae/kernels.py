"""Thin Python API over the native fused kernel: pre-activations in (numpy or torch, float32,
float16 or bfloat16), sparse quantized codes out, per-feature histograms accumulated on the way
(DESIGN §2, §5)."""

from __future__ import annotations

import numpy as np
import torch

from ._native import _C
from .codes import SparseCodes, steps_tensor
from .errors import MdlsaeError, expect

Histogram = _C.Histogram

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def _step_args(step, d_sae: int) -> tuple[float, np.ndarray | None]:
    st = steps_tensor(step, d_sae)
    return (float(st), None) if st.dim() == 0 else (1.0, st.numpy())


def select_quantize(pre: torch.Tensor | np.ndarray, k: int = 0, threshold=None, step=1.0,
                    hist: Histogram | None = None) -> SparseCodes:
    """Select (TopK when ``k > 0``, else ``pre > threshold``; ReLU either way), quantize
    ``q = rint(z / step)`` and keep the codes with ``q >= 1``; add them to ``hist`` if given.

    >>> pre = torch.tensor([[0.2, 3.1, -1.0, 2.4], [1.6, 0.0, 0.9, 0.1]])
    >>> codes = select_quantize(pre, k=2, step=1.0)
    >>> codes.row_ptr.tolist(), codes.index.tolist(), codes.q.tolist()
    ([0, 2, 4], [1, 3, 0, 2], [3, 2, 2, 1])
    """
    if isinstance(pre, np.ndarray):
        pre = torch.from_numpy(pre)
    expect(pre.dim() == 2, f"pre-activations must be 2-D [rows, d_sae], got shape {list(pre.shape)}")
    expect(pre.device.type == "cpu", f"pre-activations must be on the CPU here, got {pre.device}")
    if pre.dtype not in _DTYPE_CODES:
        pre = pre.float()
    if pre.shape[0] and pre.stride(1) != 1:
        pre = pre.contiguous()
    d_sae = pre.shape[1]
    thr = None
    if threshold is not None:
        thr = np.ascontiguousarray(np.asarray(threshold, dtype=np.float32))
    g, per_feature = _step_args(step, d_sae)
    try:
        row_ptr, index, q = _C.select_quantize(pre.data_ptr(), _DTYPE_CODES[pre.dtype], pre.shape[0], d_sae,
                                               max(pre.stride(0), d_sae), int(k), thr, g, per_feature, hist)
    except ValueError as e:
        raise MdlsaeError(str(e)) from None
    return SparseCodes(row_ptr, index, q, d_sae=d_sae)

