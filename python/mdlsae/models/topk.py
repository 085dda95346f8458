"""The TopK selection mask with the fused kernels' tie rule (equal values: the lower feature
index first), in a plain form (a stable sort: the reference) and a fast one (torch.topk, with
the sort only for the rare rows where the k-th and (k+1)-th values tie)."""

from __future__ import annotations

import torch


def topk_mask(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries per row; ties go to the lower feature index."""
    order = torch.sort(pre, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, order, True)


def fast_topk_mask(pre: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`topk_mask`, computed with torch.topk (exact: a row where the k-th and the
    (k+1)-th values tie is redone by the stable sort)."""
    if k >= pre.shape[1]:
        return torch.ones_like(pre, dtype=torch.bool)
    vals, idx = torch.topk(pre, k + 1, dim=1)
    keep = torch.zeros_like(pre, dtype=torch.bool).scatter_(1, idx[:, :k], True)
    tied = torch.nonzero(vals[:, k - 1] == vals[:, k]).flatten()
    if len(tied):
        keep[tied] = topk_mask(pre[tied], k)
    return keep
