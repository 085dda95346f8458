"""SAE training in torch. Encoder initialised as the decoder transpose, b_dec from the data
mean, unit-norm decoder rows kept by projecting the gradient and renormalising after each
step, Adam with a linear learning-rate warm-up, deterministic seeds. Streams row batches from
any activation source."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from .acts import as_activations
from .errors import expect
from .sae import SAE, SAEConfig


@dataclass
class TrainConfig:
    architecture: str = "topk"
    d_sae: int = 512
    k: int | None = 8
    epochs: int = 10
    batch_size: int = 256
    lr: float = 3e-3
    warmup_steps: int = 100
    seed: int = 0
    train_decoder: bool = True  # False: fit only the encoder to a fixed dictionary


def _project_decoder_grad(sae: SAE) -> None:
    """Remove the gradient component along each (unit) decoder row."""
    w, g = sae.W_dec.data, sae.W_dec.grad
    g -= (g * w).sum(dim=1, keepdim=True) * w


def train_sae(acts, cfg: TrainConfig, progress: bool = False, init: SAE | None = None) -> SAE:
    """Train an SAE on ``acts`` (anything :class:`~mdlsae.acts.Activations` accepts), from
    ``init`` when given (its decoder then stays fixed if ``cfg.train_decoder`` is False)."""
    acts = as_activations(acts)
    expect(cfg.architecture == "topk", f"training supports 'topk' here, got {cfg.architecture!r}")
    expect(acts.n_rows > 0, f"{acts.name}: no rows to train on")
    torch.manual_seed(cfg.seed)
    if init is not None:
        expect(init.d_in == acts.d, f"init SAE has d_in={init.d_in}, activations have {acts.d}")
        sae = init
    else:
        sae = SAE.random(SAEConfig(cfg.architecture, d_in=acts.d, d_sae=cfg.d_sae, k=cfg.k), seed=cfg.seed)
    sae.W_dec.requires_grad_(cfg.train_decoder)
    with torch.no_grad():
        total = torch.zeros(acts.d, dtype=torch.float64)
        for x in acts.batches(65536):
            total += x.double().sum(0)
        sae.b_dec.copy_((total / acts.n_rows).float())
    opt = torch.optim.Adam([p for p in sae.parameters() if p.requires_grad], lr=cfg.lr, betas=(0.9, 0.999))
    rng = np.random.default_rng(cfg.seed)
    n_batches = -(-acts.n_rows // cfg.batch_size)
    bar = tqdm(total=cfg.epochs * n_batches, disable=not progress, desc=f"train {cfg.architecture} D={cfg.d_sae}")
    step = 0
    for _ in range(cfg.epochs):
        for b in rng.permutation(n_batches):  # batch order shuffled, rows contiguous for streaming
            x = acts.rows(int(b) * cfg.batch_size, min((int(b) + 1) * cfg.batch_size, acts.n_rows))
            x_hat = sae(x)
            loss = ((x_hat - x) ** 2).sum(dim=1).mean()
            opt.zero_grad(set_to_none=False)
            loss.backward()
            if cfg.train_decoder:
                _project_decoder_grad(sae)
            for group in opt.param_groups:
                group["lr"] = cfg.lr * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            opt.step()
            if cfg.train_decoder:
                with torch.no_grad():
                    sae.W_dec.data /= sae.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-12)
            step += 1
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
    bar.close()
    sae.W_dec.requires_grad_(True)
    return sae.eval()
