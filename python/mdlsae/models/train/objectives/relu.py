"""Standard ReLU SAE with an L1 penalty on z (= z·||W_dec row||, the rows being unit norm),
whose coefficient a multiplicative controller adapts until the L0 is about k."""

from __future__ import annotations

import math

import torch

from .base import Forward, Objective, dense_forward


class ReLU(Objective):
    trained_arch = saved_arch = "relu"

    def attach(self, sae, init, scale: float) -> None:
        self.log_coeff = math.log(self.cfg.l1_coeff)

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        z = torch.relu(pre)
        return dense_forward(sae, z, math.exp(self.log_coeff) * z.sum(1).mean())

    def after_step(self, l0: float) -> None:
        # raise the penalty while L0 is above k, lower it below
        self.log_coeff += self.cfg.controller_rate * max(-1.0, min(1.0, l0 / self.k - 1))

    def state_dict(self) -> dict:
        return {"log_coeff": self.log_coeff}

    def load_state_dict(self, state: dict) -> None:
        self.log_coeff = state["log_coeff"]
