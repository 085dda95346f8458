"""Thin Python API over the native fused kernels: pre-activations in (numpy or torch, float32,
float16 or bfloat16, on the CPU or a CUDA device), sparse quantized codes out, per-feature
histograms accumulated on the way (DESIGN §2, §5)."""

from __future__ import annotations

import numpy as np
import torch

from .._native import _C, _C_cuda
from .codes import SparseCodes, steps_tensor
from ..errors import MdlsaeError, expect

Histogram = _C.Histogram

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_NO_ERROR = 2**63 - 1  # first_error of the CUDA kernel when no step was too small


def _step_args(step, d_sae: int) -> tuple[float, np.ndarray | None]:
    st = steps_tensor(step, d_sae)
    return (float(st), None) if st.dim() == 0 else (1.0, st.numpy())


def select_quantize(pre: torch.Tensor | np.ndarray, k: int = 0, threshold=None, step=1.0,
                    hist: Histogram | None = None, bias: torch.Tensor | np.ndarray | None = None,
                    parents: np.ndarray | None = None) -> SparseCodes:
    """Select (TopK when ``k > 0``, else ``pre > threshold``; ReLU either way; with ``parents``
    a strict tree's rule, :mod:`mdlsae.models.tree`) on ``pre`` (plus
    ``bias`` [d_sae], added in float32 as each row is read, when given), quantize
    ``q = rint(z / step)`` and keep the codes with ``q >= 1``; add them to ``hist`` if given.
    A CUDA tensor runs the fused GPU kernel on its device and current stream (k <= 256); the
    codes are the same, bit for bit, and come back as numpy arrays either way.

    >>> pre = torch.tensor([[0.2, 3.1, -1.0, 2.4], [1.6, 0.0, 0.9, 0.1]])
    >>> codes = select_quantize(pre, k=2, step=1.0)
    >>> codes.row_ptr.tolist(), codes.index.tolist(), codes.q.tolist()
    ([0, 2, 4], [1, 3, 0, 2], [3, 2, 2, 1])
    """
    if isinstance(pre, np.ndarray):
        pre = torch.from_numpy(pre)
    expect(pre.dim() == 2, f"pre-activations must be 2-D [rows, d_sae], got shape {list(pre.shape)}")
    expect(pre.device.type in ("cpu", "cuda"), f"pre-activations must be on the CPU or a CUDA device, got {pre.device}")
    if pre.dtype not in _DTYPE_CODES:
        pre = pre.float()
    if pre.shape[0] and pre.stride(1) != 1:
        pre = pre.contiguous()
    d_sae = pre.shape[1]
    thr = None
    if threshold is not None:
        thr = np.ascontiguousarray(np.asarray(threshold, dtype=np.float32))
    g, per_feature = _step_args(step, d_sae)
    if parents is not None:
        parents = np.ascontiguousarray(parents, dtype=np.int32)
    if pre.device.type == "cuda":
        expect(parents is None, "a tree SAE's selection runs on the CPU only: move its pre-activations "
                                "to the CPU (pre.cpu())")
        bias = None if bias is None else torch.as_tensor(bias, device=pre.device).float().contiguous()
        return _select_quantize_cuda_to_host(pre, int(k), thr, g, per_feature, hist, bias)
    if bias is not None:
        bias = np.ascontiguousarray(bias.detach().float().cpu().numpy() if isinstance(bias, torch.Tensor) else bias,
                                    dtype=np.float32)
    try:
        row_ptr, index, q = _C.select_quantize(pre.data_ptr(), _DTYPE_CODES[pre.dtype], pre.shape[0], d_sae,
                                               max(pre.stride(0), d_sae), int(k), thr, g, per_feature, hist, bias,
                                               parents)
    except ValueError as e:
        raise MdlsaeError(str(e)) from None
    return SparseCodes(row_ptr, index, q, d_sae=d_sae)


def _select_quantize_cuda_to_host(pre, k, thr, step, steps, hist, bias=None) -> SparseCodes:
    d_sae = pre.shape[1]
    if hist is not None:
        expect(hist.d_sae == d_sae, f"histogram has d_sae {hist.d_sae} but the pre-activations have {d_sae}")
    row_ptr, index, q, counts = _select_quantize_cuda(pre, k, thr, step, steps,
                                                      None if hist is None else hist.dense_cap, bias)
    codes = SparseCodes(row_ptr.cpu().numpy(), index.cpu().numpy(), q.cpu().numpy(), d_sae=d_sae)
    if hist is not None:
        hist.add_dense_counts(counts.cpu().numpy().view(np.uint32), codes.n_rows)
        big = codes.q >= hist.dense_cap  # the device counts only q < dense_cap (see below)
        hist.add_codes(codes.index[big], codes.q[big], 0)
    return codes


def _select_quantize_cuda(pre: torch.Tensor, k: int, thr: np.ndarray | None, step: float,
                          steps: np.ndarray | None, dense_cap: int | None,
                          bias: torch.Tensor | None = None) -> tuple:
    """The GPU kernel on ``pre``'s device and current stream, results left there:
    ``(row_ptr int64, index int32, q int32, counts)``, counts an int32 tensor holding the uint32
    dense histogram [d_sae * dense_cap] of q < dense_cap, or None without ``dense_cap``.
    ``bias`` (float32 [d_sae] on the device) is added to every row as the kernel reads it.

    The device histogram stops at dense_cap because the codes with larger q are rare and reach
    the host anyway, so the host picks them out of the codes; a device overflow list of unknown
    length would buy nothing. One host sync (nnz, and the step-too-small check) sits between
    the selection pass and the CSR write."""
    expect(_C_cuda is not None, "this mdlsae was built without CUDA: move the pre-activations to the CPU "
                                "or reinstall with a CUDA toolkit present")
    n, d_sae = pre.shape
    dev = pre.device
    if thr is not None:
        expect(thr.shape == (d_sae,), f"threshold must have shape [{d_sae}], got {list(thr.shape)}")
    i32 = dict(dtype=torch.int32, device=dev)
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        thr_d = None if thr is None or k > 0 else torch.from_numpy(thr).to(dev)
        steps_d = None if steps is None else torch.from_numpy(steps).to(dev)
        counts = None if dense_cap is None else torch.zeros(d_sae * dense_cap, **i32)
        slots = torch.empty((2, n, k), **i32) if k > 0 else None
        row_nnz = torch.zeros(n + 1, dtype=torch.int64, device=dev)  # [0, nnz of row 0, ...]
        first_error = torch.full((1,), _NO_ERROR, dtype=torch.int64, device=dev)
        try:
            args = _C_cuda.SelectQuantizeArgs(
                pre=pre.data_ptr(), dtype=_DTYPE_CODES[pre.dtype], rows=n, d_sae=d_sae,
                row_stride=max(pre.stride(0), d_sae), k=k, threshold=_address(thr_d), step=step,
                steps=_address(steps_d), counts=_address(counts), dense_cap=dense_cap or 64,
                bias=_address(bias))
            slot_index, slot_q = (_address(slots[0]), _address(slots[1])) if k > 0 else (0, 0)
            _C_cuda.select_quantize_rows(args, row_nnz=_address(row_nnz[1:]), slot_index=slot_index, slot_q=slot_q,
                                         first_error=_address(first_error), stream=stream)
            row_ptr = row_nnz.cumsum(0)
            nnz, err = torch.stack([row_ptr[-1], first_error[0]]).tolist()
            if err != _NO_ERROR:
                _C_cuda.throw_step_too_small(args, first_error=err, stream=stream)
            index, q = torch.empty(nnz, **i32), torch.empty(nnz, **i32)
            _C_cuda.write_codes(args, row_ptr=_address(row_ptr), slot_index=slot_index, slot_q=slot_q,
                                index=_address(index), q=_address(q), stream=stream)
        except ValueError as e:
            raise MdlsaeError(str(e)) from None
    return row_ptr, index, q, counts


def _address(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()
