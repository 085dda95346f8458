"""Toy activations with ground-truth features (DESIGN §6): random unit directions in
superposition, power-law firing rates and positive magnitudes. ``x = z @ F`` where row i of
F is feature i's direction and z the sparse true coefficients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .errors import expect


@dataclass
class ToyData:
    x: np.ndarray  # float32 [n_rows, d]
    features: np.ndarray  # float32 [n_features, d], unit rows
    coeffs: np.ndarray  # float32 [n_rows, n_features], the true sparse code
    rates: np.ndarray  # float64 [n_features], firing probabilities


def power_law_rates(n_features: int, mean_active: float, exponent: float) -> np.ndarray:
    """Firing probabilities p_i ~ (i+1)^-exponent scaled so that sum_i p_i = mean_active."""
    expect(0 < mean_active < n_features, f"mean_active must be in (0, {n_features}), got {mean_active}")
    w = np.arange(1, n_features + 1, dtype=np.float64) ** -exponent
    p = w * mean_active / w.sum()
    for _ in range(50):  # redistribute mass clipped at 1
        over = p > 1
        if not over.any():
            break
        p[over] = 1
        free = ~over
        p[free] *= (mean_active - over.sum()) / p[free].sum()
    return p


def make_toy(n_rows: int = 120_000, d: int = 64, n_features: int = 256, mean_active: float = 4.0,
             exponent: float = 0.5, noise: float = 0.0, seed: int = 0) -> ToyData:
    """Ground-truth toy data. Magnitudes are uniform in [0.5, 1.5].

    >>> t = make_toy(n_rows=1000, d=16, n_features=32, mean_active=2, seed=1)
    >>> t.x.shape, t.features.shape, round(float((t.coeffs > 0).sum(1).mean()))
    ((1000, 16), (32, 16), 2)
    """
    expect(n_rows >= 0 and d > 0 and n_features > 0, "n_rows, d and n_features must be positive")
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n_features, d, generator=g, dtype=torch.float64)
    f /= f.norm(dim=1, keepdim=True)
    rates = power_law_rates(n_features, mean_active, exponent)
    on = torch.rand(n_rows, n_features, generator=g, dtype=torch.float64) < torch.from_numpy(rates)
    mag = 0.5 + torch.rand(n_rows, n_features, generator=g, dtype=torch.float64)
    z = (on * mag).float()
    x = z @ f.float()
    if noise > 0:
        x += noise * torch.randn(x.shape, generator=g)
    return ToyData(x.numpy(), f.float().numpy(), z.numpy(), rates)
