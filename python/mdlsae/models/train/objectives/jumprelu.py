"""JumpReLU (Rajamanoharan et al.): z = pre·H(pre − θ) with a learnt per-feature θ, trained
through straight-through estimators with a rectangle kernel; the penalty (L0/k − 1)² pulls the
batch L0 towards k (dictionary_learning's target-L0 loss). θ is learnt as log θ, so it stays
positive; it starts low so that every latent is live and receives gradient."""

from __future__ import annotations

import math

import torch

from .base import Forward, Objective, dense_forward


class _JumpReLU(torch.autograd.Function):
    """z = pre·H(pre − θ); ∂z/∂θ uses the rectangle-kernel pseudo-derivative −(θ/ε)·K((pre−θ)/ε)."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return pre * (pre > theta)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.bandwidth / 2).to(g.dtype)
        return g * (pre > theta), -(theta / ctx.bandwidth) * (g * near).sum(0), None


class _Step(torch.autograd.Function):
    """H(pre − θ) with ∂H/∂θ ≈ −(1/ε)·K((pre−θ)/ε) (and no gradient to pre)."""

    @staticmethod
    def forward(ctx, pre, theta, bandwidth):
        ctx.save_for_backward(pre, theta)
        ctx.bandwidth = bandwidth
        return (pre > theta).to(pre.dtype)

    @staticmethod
    def backward(ctx, g):
        pre, theta = ctx.saved_tensors
        near = ((pre - theta).abs() < ctx.bandwidth / 2).to(g.dtype)
        return None, -(g * near).sum(0) / ctx.bandwidth, None


class JumpReLU(Objective):
    trained_arch = saved_arch = "jumprelu"

    def attach(self, sae, init, scale: float) -> None:
        sae.threshold.requires_grad_(False)  # trained through log_threshold
        if init is not None:
            log_t = init.threshold.detach().to(self.device).mul(scale).clamp_min(1e-6).log()
        else:
            # starting at L0 ≈ k instead leaves most latents dead
            log_t = torch.full((self.d_sae,), math.log(self.cfg.threshold_init), device=self.device)
        self.log_threshold = torch.nn.Parameter(log_t)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [self.log_threshold]

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        theta, bw = self.log_threshold.exp(), self.cfg.bandwidth
        z = _JumpReLU.apply(pre, theta, bw)
        l0_st = _Step.apply(pre, theta, bw).sum(1).mean()
        return dense_forward(sae, z, self.cfg.l0_coeff * self.d_in * (l0_st / self.k - 1) ** 2)

    def state_dict(self) -> dict:
        return {"log_threshold": self.log_threshold.detach()}

    def load_state_dict(self, state: dict) -> None:
        self.log_threshold.data.copy_(state["log_threshold"])

    def finish(self, sae, sample: torch.Tensor, scale: float) -> None:
        with torch.no_grad():
            sae.threshold.copy_(self.log_threshold.detach().cpu().exp() / scale)
