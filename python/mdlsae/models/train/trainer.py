"""The training loop shared by every architecture: initialisation, one optimiser step, the run
with its progress bar and periodic checkpoints, and the conversion back to raw units.

The practices of the strongest public trainers (OpenAI's TopK paper, dictionary_learning,
sparsify, Gemma Scope): activations scaled to E||x - mean||² = d while training (the scale is
folded back into the weights at the end, so the saved SAE reads raw activations); b_dec from
the data's geometric median (or mean); encoder initialised as the decoder transpose; unit-norm
decoder rows kept by projecting their gradient and renormalising after each Adam step; the
AuxK loss that lets dead latents learn the residual; learning-rate warm-up and a linear decay
to zero at the end. What differs per architecture lives in :mod:`.objectives`.
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ...data.acts import as_activations
from ...errors import expect
from ..sae import SAE, WITH_K, SAEConfig
from . import checkpoint
from .config import DEFAULT_TRAIN_ROWS, EVAL_ROWS, POOL_BYTES, TrainConfig, TrainResult, default_k, default_lr
from .metrics import evaluate
from .objectives import OBJECTIVES
from .stream import BatchStream, moments, sample_rows


def geometric_median(x: torch.Tensor, iters: int = 100, tol: float = 1e-6) -> torch.Tensor:
    """Weiszfeld's algorithm, started at the mean."""
    x = x.double()
    m = x.mean(0)
    for _ in range(iters):
        w = 1 / (x - m).norm(dim=1).clamp_min(1e-12)
        new = (w[:, None] * x).sum(0) / w.sum()
        done = float((new - m).norm()) <= tol * (1 + float(m.norm()))
        m = new
        if done:
            break
    return m.float()


class Trainer:
    """One training run: the state a checkpoint holds plus the steps that advance it."""

    def __init__(self, acts, cfg: TrainConfig, init: SAE | None = None, progress: bool = False):
        self.acts = as_activations(acts)
        self.progress = progress
        expect(self.acts.n_rows > 0, f"{self.acts.name}: no rows to train on")
        self.cfg = cfg
        self.device = torch.device("cuda" if cfg.device == "auto" and torch.cuda.is_available()
                                   else ("cpu" if cfg.device == "auto" else cfg.device))
        d = self.acts.d
        arch = cfg.architecture
        if init is not None:
            expect(init.d_in == d, f"init SAE has d_in={init.d_in}, activations have {d}")
            expect(init.cfg.architecture in (arch, *OBJECTIVES[arch].init_archs),
                   f"init SAE is {init.cfg.architecture!r}, training asks for {arch!r}")
        self.k = int(init.cfg.k) if init is not None and arch in WITH_K and init.cfg.k else (cfg.k or default_k(d, cfg.d_sae))
        self.d_sae = init.d_sae if init is not None else cfg.d_sae
        self.stream = BatchStream(self.acts, cfg.batch_size, cfg.seed, self.device)
        epochs = cfg.epochs or max(1, math.ceil(DEFAULT_TRAIN_ROWS / (self.stream.steps_per_epoch * self.stream.batch_size)))
        self.total_steps = max(1, round(epochs * self.stream.steps_per_epoch))
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(1000, self.total_steps // 20)
        self.lr = cfg.lr or default_lr(self.d_sae)
        self.aux_k = min(self.d_sae, d // 2 if cfg.aux_k is None else cfg.aux_k)
        self.dead_rows = cfg.dead_rows or min(self.acts.n_rows, 10_000_000)

        self.mean, var = moments(self.acts, progress)
        self.scale = math.sqrt(d / var) if cfg.normalize and var > 0 else 1.0
        self.var = max(var, 1e-30) * self.scale ** 2  # E||x - mean||² in training units
        self.objective = OBJECTIVES[arch](cfg, self.k, d, self.d_sae, self.device)
        # the model trains in scaled units: latents and biases scale with the data, W_* do not
        if init is not None:
            self.sae = SAE(init.cfg)
            self.sae.load_state_dict(init.state_dict())
            with torch.no_grad():
                for p in (self.sae.b_enc, self.sae.b_dec):
                    p.mul_(self.scale)
        else:
            trained = self.objective.trained_arch
            self.sae = SAE.random(SAEConfig(trained, d_in=d, d_sae=self.d_sae, k=self.k if trained in WITH_K else None,
                                            parents=self.objective.forest()), seed=cfg.seed)
            with torch.no_grad():
                if cfg.b_dec_init == "median":
                    self.sae.b_dec.copy_(geometric_median(sample_rows(self.acts, 16384)) * self.scale)
                else:
                    self.sae.b_dec.copy_(self.mean * self.scale)
        self.sae.to(self.device)
        self.sae.W_dec.requires_grad_(cfg.train_decoder)
        self.objective.attach(self.sae, init, self.scale)
        params = [p for p in self.sae.parameters() if p.requires_grad] + self.objective.parameters()
        self.opt = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999))
        self.step = 0
        self.since_fired = torch.zeros(self.d_sae, dtype=torch.long, device=self.device)
        self.ema: dict[str, float] = {}

    # ------------------------------------------------------------------ one step
    def lr_at(self, step: int) -> float:
        warm = min(1.0, (step + 1) / max(self.warmup, 1))
        decay_steps = self.cfg.decay_frac * self.total_steps
        left = self.total_steps - step
        return self.lr * warm * (min(1.0, left / decay_steps) if decay_steps > 0 else 1.0)

    def _aux_loss(self, pre: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """AuxK: the top ``aux_k`` dead latents reconstruct what the live ones left over."""
        dead = self.since_fired >= self.dead_rows
        n_dead = int(dead.sum())
        if self.aux_k == 0 or n_dead == 0 or self.cfg.aux_alpha == 0:
            return pre.new_zeros(())
        k_aux = min(self.aux_k, n_dead)
        vals, idx = torch.where(dead, pre, -torch.inf).topk(k_aux, dim=1, sorted=False)
        e_hat = F.embedding_bag(idx, self.sae.W_dec, per_sample_weights=torch.relu(vals), mode="sum")
        denom = (residual - residual.mean(0)).pow(2).sum(1).mean().clamp_min(1e-12)
        # few dead latents get a proportionally smaller say (sparsify's scale)
        return min(1.0, n_dead / self.aux_k) * (e_hat - residual).pow(2).sum(1).mean() / denom

    def train_step(self, x: torch.Tensor) -> dict[str, float]:
        cfg, sae = self.cfg, self.sae
        x = x * self.scale
        pre = sae.pre_acts(x)
        out = self.objective.forward(sae, pre)
        if out.groups is None:
            err = x - out.x_hat  # the residual AuxK learns
            rec = mse = err.pow(2).sum(1).mean()
        else:  # the prefixes' residuals, one subtraction each (a cumsum and its backward cost more)
            err, losses = x - sae.b_dec, []
            for part in out.groups:
                err = err - part
                losses.append(err.pow(2).sum(1).mean())
            mse, rec = losses[-1], sum(losses) / len(losses)
        aux = self._aux_loss(pre, err.detach())
        loss = rec + cfg.aux_alpha * aux + out.penalty
        self.opt.zero_grad(set_to_none=False)
        loss.backward()
        if cfg.train_decoder:
            w, g = sae.W_dec.data, sae.W_dec.grad
            g -= (g * w).sum(dim=1, keepdim=True) * w  # keep the step tangent to the unit sphere
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.opt.step()
        with torch.no_grad():
            if cfg.train_decoder:
                sae.W_dec.data /= sae.W_dec.data.norm(dim=1, keepdim=True).clamp_min(1e-12)
            self.since_fired += len(x)
            self.since_fired[out.fired] = 0
        self.objective.after_step(out.l0)
        self.step += 1
        return {"loss": loss.item(), "fvu": mse.item() / self.var, "l0": out.l0}

    # ------------------------------------------------------------------ run and finish
    def run(self, checkpoint_path: str | os.PathLike | None = None, checkpoint_every_s: float = 300.0) -> None:
        spe = self.stream.steps_per_epoch
        bar = tqdm(total=self.total_steps, initial=self.step, disable=not self.progress, unit="step",
                   desc=f"train {self.cfg.architecture} D={self.d_sae} k={self.k}")
        last_save = time.monotonic()
        try:
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, spe)
                for x in self.stream.batches(epoch, start):
                    m = self.train_step(x)
                    for key, v in m.items():  # smoothed figures for the bar
                        self.ema[key] = v if key not in self.ema else 0.98 * self.ema[key] + 0.02 * v
                    bar.update(1)
                    if self.step % 25 == 0 or self.step == self.total_steps:
                        dead = float((self.since_fired >= self.dead_rows).float().mean())
                        bar.set_postfix(loss=f"{self.ema['loss']:.4g}", fvu=f"{self.ema['fvu']:.4f}",
                                        l0=f"{self.ema['l0']:.1f}", dead=f"{dead:.3f}")
                    if checkpoint_path is not None and time.monotonic() - last_save > checkpoint_every_s:
                        checkpoint.save(self, checkpoint_path)
                        last_save = time.monotonic()
                    if self.step >= self.total_steps:
                        break
        except KeyboardInterrupt:
            if checkpoint_path is not None:
                checkpoint.save(self, checkpoint_path)
            raise
        finally:
            bar.close()

    def finish(self) -> TrainResult:
        """The SAE in raw-activation units (BatchTopK as JumpReLU) and its final statistics."""
        s, arch = self.scale, self.objective.saved_arch
        sae = SAE(SAEConfig(arch, d_in=self.acts.d, d_sae=self.d_sae,
                            k=self.k if arch in WITH_K and self.objective.keeps_k else None,
                            parents=self.sae.cfg.parents))
        src = self.sae.to("cpu")
        with torch.no_grad():
            # latents of x are those of s·x divided by s: W_* unchanged, biases and threshold / s
            sae.W_enc.copy_(src.W_enc)
            sae.W_dec.copy_(src.W_dec)
            sae.b_enc.copy_(src.b_enc / s)
            sae.b_dec.copy_(src.b_dec / s)
        sample = sample_rows(self.acts, min(EVAL_ROWS, POOL_BYTES // (4 * self.acts.d)))
        self.objective.finish(sae, sample, s)
        stats = evaluate(sae, sample)
        stats.update(steps=self.step, rows_seen=self.step * self.stream.batch_size, scale=s, lr=self.lr,
                     k=self.k, epochs=self.step / self.stream.steps_per_epoch)
        return TrainResult(sae.eval(), stats)
