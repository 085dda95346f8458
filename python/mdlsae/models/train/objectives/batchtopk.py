"""BatchTopK (Bussmann et al.): the k·batch largest ReLU pre-activations of the whole batch, so
the L0 is k on average. Inference uses one threshold calibrated at the end (the mean smallest
kept value), so the saved SAE is a JumpReLU."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ....errors import expect
from .base import Forward, Objective


class BatchTopK(Objective):
    trained_arch = "relu"
    saved_arch = "jumprelu"

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        rows, cols, vals = batch_topk(pre, self.k)
        x_hat = bag_decode(sae.W_dec, rows, len(pre), cols, vals) + sae.b_dec
        return Forward(x_hat, cols, len(vals) / len(pre), pre.new_zeros(()))

    def finish(self, sae, sample: torch.Tensor, scale: float) -> None:
        with torch.no_grad():
            sae.threshold.fill_(batchtopk_threshold(sae, sample, self.k))


def batch_topk(pre: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(rows, features, values) of the k·batch largest positive pre-activations of the batch."""
    top = torch.relu(pre).flatten().topk(k * len(pre), sorted=False)
    keep = top.values > 0
    idx, vals = top.indices[keep], top.values[keep]
    return idx // pre.shape[1], idx % pre.shape[1], vals


def bag_decode(w_dec: torch.Tensor, bags: torch.Tensor, n_bags: int, cols: torch.Tensor,
               vals: torch.Tensor) -> torch.Tensor:
    """[n_bags, d_in]: bag b sums vals · w_dec[cols] over its entries (bags[e] == b): gathering
    the active decoder rows instead of a dense [batch, d_sae] product."""
    order = torch.argsort(bags)
    counts = torch.bincount(bags, minlength=n_bags)
    offsets = torch.cumsum(counts, 0) - counts
    return F.embedding_bag(cols[order], w_dec, offsets, per_sample_weights=vals[order], mode="sum")


def batchtopk_threshold(sae, x: torch.Tensor, k: int) -> float:
    """The inference threshold of a BatchTopK SAE: the mean over chunks of the smallest value
    that BatchTopK keeps, so that thresholding gives L0 ≈ k."""
    return mean_smallest_kept(sae, x, k, lambda pre: torch.relu(pre).flatten())


@torch.no_grad()
def mean_smallest_kept(sae, x: torch.Tensor, k: int, values, chunk: int = 4096) -> float:
    """The mean over chunks of rows of the smallest of the k·rows largest ``values(pre)`` (a
    budget's candidates, 1-D), weighted by how many were kept: the one threshold that keeps
    about k per row at inference."""
    ts, ws = [], []
    for i in range(0, len(x), chunk):
        v = values(sae.pre_acts(x[i:i + chunk]))
        n = min(k * len(x[i:i + chunk]), v.numel())
        if n:
            ts.append(float(v.topk(n, sorted=False).values.min()))
            ws.append(n)
    expect(ts, "no latent fires on the calibration rows: cannot calibrate the threshold")
    return float(np.average(ts, weights=ws))
