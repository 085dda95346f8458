"""BatchTopK (Bussmann et al.): the k·batch largest ReLU pre-activations of the whole batch, so
the L0 is k on average. Inference uses one threshold calibrated at the end (the mean smallest
kept value), so the saved SAE is a JumpReLU."""

from __future__ import annotations

import numpy as np
import torch

from .base import Forward, Objective, dense_forward


class BatchTopK(Objective):
    trained_arch = "relu"
    saved_arch = "jumprelu"

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        flat = torch.relu(pre).flatten()
        top = flat.topk(self.k * len(pre), sorted=False)
        z = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
        return dense_forward(sae, z, pre.new_zeros(()))

    def finish(self, sae, sample: torch.Tensor, scale: float) -> None:
        with torch.no_grad():
            sae.threshold.fill_(batchtopk_threshold(sae, sample, self.k))


@torch.no_grad()
def batchtopk_threshold(sae, x: torch.Tensor, k: int, chunk: int = 4096) -> float:
    """The inference threshold of a BatchTopK SAE: the mean over chunks of the smallest value
    that BatchTopK keeps, so that thresholding gives L0 ≈ k."""
    ts, ws = [], []
    for i in range(0, len(x), chunk):
        r = torch.relu(sae.pre_acts(x[i:i + chunk])).flatten()
        n = min(k * len(x[i:i + chunk]), r.numel())
        ts.append(float(r.topk(n, sorted=False).values.min()))
        ws.append(n)
    return float(np.average(ts, weights=ws))
