"""TopK (Gao et al.): the k largest pre-activations per row, then ReLU; the L0 is exactly k, so
there is no penalty. The reconstruction gathers k decoder rows instead of a dense product."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Forward, Objective


class TopK(Objective):
    trained_arch = saved_arch = "topk"

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        vals, idx = pre.topk(self.k, dim=1, sorted=False)
        vals = torch.relu(vals)
        x_hat = F.embedding_bag(idx, sae.W_dec, per_sample_weights=vals, mode="sum") + sae.b_dec
        return Forward(x_hat, idx[vals > 0], float((vals > 0).sum()) / len(pre), pre.new_zeros(()))
