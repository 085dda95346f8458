"""The interface between the shared training loop and one architecture.

An objective says which SAE the loop trains, how a batch's pre-activations become latents, a
reconstruction and a sparsity penalty, what it adapts between steps, which extra state a
checkpoint keeps, and how the trained weights become the saved inference SAE.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Forward:
    x_hat: torch.Tensor | None  # reconstruction of the (scaled) batch; None when given by `groups`
    fired: torch.Tensor  # indices of the latents that fired in this batch (repeats allowed)
    l0: float  # mean active latents per row
    penalty: torch.Tensor  # sparsity term added to the loss (0-dim)
    # Matryoshka: [groups, batch, d_in], each group's share of the reconstruction without b_dec;
    # prefix j is b_dec plus groups 0..j, the last one is x_hat, and the loss averages the
    # prefixes' squared errors
    groups: torch.Tensor | None = None


def dense_forward(sae, z: torch.Tensor, penalty: torch.Tensor) -> Forward:
    """The reconstruction and firing statistics of dense latents ``z`` [batch, d_sae]."""
    active = z > 0
    return Forward(z @ sae.W_dec + sae.b_dec, active.any(0).nonzero().squeeze(1),
                   float(active.sum()) / len(z), penalty)


class Objective:
    """One architecture's part of training (see the module doc); subclasses set the two names."""

    trained_arch: str  # SAEConfig.architecture of the SAE the loop trains
    saved_arch: str  # SAEConfig.architecture of the SAE :meth:`finish` leaves
    keeps_k = True  # a saved topk or tree SAE selects by k (False: a tree by its calibrated thresholds)
    init_archs: tuple[str, ...] = ()  # architectures besides its own an SAE to start from may have

    def __init__(self, cfg, k: int, d_in: int, d_sae: int, device: torch.device):
        self.cfg, self.k, self.d_in, self.d_sae, self.device = cfg, k, d_in, d_sae, device

    def forest(self):
        """The parents array of a freshly initialised SAE, for architectures that have one."""
        return None

    def attach(self, sae, init, scale: float) -> None:
        """Called once with the SAE to train (scaled units) and the SAE it started from, if any."""

    def parameters(self) -> list[torch.nn.Parameter]:
        """Trainable tensors beyond the SAE's own."""
        return []

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        raise NotImplementedError

    def after_step(self, l0: float) -> None:
        """Adapt after an optimiser step, given the batch's L0."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def finish(self, sae, sample: torch.Tensor, scale: float) -> None:
        """Complete the saved SAE ``sae`` (raw units, weights and biases already set) from what
        training learnt beyond them; ``sample`` holds raw rows for calibration."""
