"""Matryoshka BatchTopK (Bussmann et al. 2025, after bartbussmann/matryoshka_sae and
dictionary_learning's ``MatryoshkaBatchTopKTrainer``): BatchTopK latents whose nested prefixes
of the dictionary — the first g_1 latents, the first g_1 + g_2, …, all of them — must each
reconstruct the batch; the loss is the mean of the prefixes' squared errors. Early latents
learn general features and later ones refine them, which encourages hierarchy (it does not
enforce it) and reduces feature absorption, at slightly worse reconstruction. Inference is
BatchTopK's: one calibrated threshold, saved as JumpReLU (as SAELens saves these SAEs).

Default group sizes: D/16, D/16, D/8, D/4, D/2 (prefixes at 1/16, 1/8, 1/4, 1/2 and all of D).
"""

from __future__ import annotations

import torch

from ....errors import expect
from .base import Forward
from .batchtopk import BatchTopK, bag_decode, batch_topk


def default_groups(d_sae: int) -> list[int]:
    """Group sizes D/16, D/16, D/8, D/4, D/2 (rounded; small dictionaries get fewer groups)."""
    cuts = sorted({max(1, round(d_sae * f)) for f in (1 / 16, 1 / 8, 1 / 4, 1 / 2)} | {d_sae})
    return [b - a for a, b in zip([0] + cuts[:-1], cuts)]


class Matryoshka(BatchTopK):
    def __init__(self, cfg, k: int, d_in: int, d_sae: int, device: torch.device):
        super().__init__(cfg, k, d_in, d_sae, device)
        self.groups = list(cfg.groups) if cfg.groups else default_groups(d_sae)
        expect(all(g >= 1 for g in self.groups) and sum(self.groups) == d_sae,
               f"matryoshka group sizes must be positive and sum to d_sae={d_sae}, got {self.groups}")
        self.bounds = torch.tensor(self.groups).cumsum(0)[:-1]  # first latent of groups 1, 2, …

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        rows, cols, vals = batch_topk(pre, self.k)
        # one bag per (group, row), decoded in one gather, group-major so that each group's share
        # is one contiguous [batch, d_in] block
        group = torch.bucketize(cols, self.bounds.to(cols.device), right=True)
        n, g = len(pre), len(self.groups)
        parts = bag_decode(sae.W_dec, group * n + rows, n * g, cols, vals).view(g, n, -1)
        return Forward(None, cols, len(vals) / n, pre.new_zeros(()), parts)
