"""Plain torch / numpy references for every native kernel. They define the semantics the
fused kernels must reproduce bit for bit (DESIGN §2) and are what the tests compare against;
they are simple, not fast."""

from __future__ import annotations

import numpy as np
import torch

from ..models.topk import topk_mask
from ..models.tree import TreeRule
from .codes import SparseCodes, steps_tensor


def quantize(z: torch.Tensor, step) -> torch.Tensor:
    """q = rint(z / step) in float32, round half to even; z <= 0 gives 0."""
    z = z.float()
    step = steps_tensor(step, z.shape[-1])
    return torch.round(torch.clamp(z, min=0.0) / step)


def select_quantize(pre: torch.Tensor, k: int = 0, threshold: torch.Tensor | np.ndarray | None = None,
                    step=1.0, bias: torch.Tensor | None = None, parents: np.ndarray | None = None) -> SparseCodes:
    """TopK (k > 0) or threshold selection (a strict tree's rule with ``parents``), ReLU,
    quantization of ``pre`` (+ ``bias``, float32); the codes with q >= 1."""
    pre = pre.detach().to("cpu").float()
    if bias is not None:
        pre = pre + torch.as_tensor(bias).detach().float()
    if parents is not None:
        thr = None if k > 0 else (torch.zeros(pre.shape[-1]) if threshold is None else torch.as_tensor(threshold).float())
        mask = TreeRule(torch.as_tensor(parents), general=True).mask(pre, k or None, threshold=thr)
        z = torch.where(mask, pre, torch.zeros(()))
    elif k > 0:
        z = torch.where(topk_mask(pre, k), pre, torch.zeros(()))
    else:
        thr = torch.zeros(pre.shape[-1]) if threshold is None else torch.as_tensor(threshold).float()
        z = torch.where(pre > thr, pre, torch.zeros(()))
    q = quantize(z, step)
    active = q >= 1
    rows, cols = torch.nonzero(active, as_tuple=True)
    row_ptr = np.zeros(pre.shape[0] + 1, dtype=np.int64)
    np.cumsum(active.sum(dim=1).numpy(), out=row_ptr[1:])
    return SparseCodes(row_ptr, cols.numpy().astype(np.int32), q[rows, cols].numpy().astype(np.int32),
                       d_sae=pre.shape[1])


def histogram(codes: SparseCodes) -> dict[tuple[int, int], int]:
    """{(feature, q): count} of a set of codes."""
    keys, counts = np.unique(np.stack([codes.index, codes.q]).astype(np.int64), axis=1, return_counts=True)
    return {(int(f), int(q)): int(c) for (f, q), c in zip(keys.T, counts)}
