"""Shared fixtures: small SAEs on disk and toy activation files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdlsae.models.sae import SAE, SAEConfig
from mdlsae.data import make_toy


@pytest.fixture(scope="session")
def toy():
    return make_toy(n_rows=3000, d=16, n_features=48, mean_active=3, seed=3)


@pytest.fixture()
def toy_npy(tmp_path, toy):
    path = tmp_path / "acts.npy"
    np.save(path, toy.x)
    return path


def make_sae(arch: str, d_in: int = 16, d_sae: int = 48, k: int = 4, seed: int = 0) -> SAE:
    sae = SAE.random(SAEConfig(arch, d_in=d_in, d_sae=d_sae, k=k if arch == "topk" else None), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(d_in, generator=g))
        if arch == "jumprelu":
            sae.threshold.copy_(0.2 + 0.3 * torch.rand(d_sae, generator=g))
    return sae


@pytest.fixture()
def sae_dir(tmp_path):
    path = tmp_path / "sae"
    make_sae("topk").save(path)
    return path
