"""SAE training in torch (CPU or CUDA) for ``topk``, ``batchtopk``, ``jumprelu`` and ``relu``.

The practices of the strongest public trainers (OpenAI's TopK paper, dictionary_learning,
sparsify, Gemma Scope): activations scaled to E||x - mean||² = d while training (the scale is
folded back into the weights at the end, so the saved SAE reads raw activations); b_dec from
the data's geometric median (or mean); encoder initialised as the decoder transpose; unit-norm
decoder rows kept by projecting their gradient and renormalising after each Adam step; the
AuxK loss that lets dead latents learn the residual; learning-rate warm-up and a linear decay
to zero at the end. ``k`` is the L0 for every architecture: exact per row for TopK, the batch
mean for BatchTopK (inference uses a threshold calibrated at the end, so it saves as
``jumprelu``), and a target for JumpReLU (a penalty (L0/k − 1)² through the straight-through
threshold estimator) and ReLU (an L1 penalty whose coefficient a controller adapts until L0 ≈ k).

Data streams in bounded memory: each epoch visits blocks of consecutive rows in a random order,
shuffles rows within pools of blocks, and cuts batches from that stream, so files larger than
RAM train well. Given the seed, a run is deterministic on CPU, and a checkpoint (written
periodically and on Ctrl-C) resumes to the same weights as an uninterrupted run.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .acts import Activations, as_activations
from .errors import MdlsaeError, expect
from .fileio import atomic_file
from .sae import SAE, SAEConfig

ARCHITECTURES = ("topk", "batchtopk", "jumprelu", "relu")
DEFAULT_TRAIN_ROWS = 1_500_000  # rows seen by default: small datasets get several epochs
POOL_BYTES = 256 << 20  # rows shuffled together in memory
BLOCK_ROWS = 1024  # contiguous rows read at once from the source
EVAL_ROWS = 131_072  # rows (at most POOL_BYTES) for the final statistics and BatchTopK threshold
CHECKPOINT_VERSION = 1


@dataclass
class TrainConfig:
    """Hyper-parameters; ``None`` means a default derived from the data and the SAE size."""

    architecture: str = "topk"
    d_sae: int = 512
    k: int | None = None  # L0 (see the module doc); default min(32, max(1, d_in // 8))
    epochs: float | None = None  # default: enough to see DEFAULT_TRAIN_ROWS rows, at least 1
    batch_size: int = 256
    lr: float | None = None  # default 2e-3 / sqrt(d_sae / 512), capped at 3e-3
    warmup_steps: int | None = None  # default min(1000, 5 % of the steps)
    decay_frac: float = 0.2  # linear decay of the learning rate to 0 over the last fraction
    b_dec_init: str = "median"  # "median" (geometric) or "mean" of the data
    normalize: bool = True  # train on scaled activations, fold the scale back at the end
    aux_k: int | None = None  # AuxK latents per row; default d_in // 2; 0 turns AuxK off
    aux_alpha: float = 1 / 32
    dead_rows: int | None = None  # a latent is dead after this many rows without firing
    # (default min(n_rows, 10M): one epoch of small data; shorter windows kill rare latents)
    l1_coeff: float = 0.1  # relu: initial L1 coefficient, then adapted until L0 ≈ k
    controller_rate: float = 0.01  # relu: per-step change of log(L1 coefficient) when L0 is far off k
    l0_coeff: float = 0.5  # jumprelu: weight (× d_in) of the penalty (L0 / k - 1)²
    threshold_init: float = 0.01  # jumprelu: initial threshold (scaled units): starts close to ReLU
    bandwidth: float = 0.05  # JumpReLU straight-through kernel width (scaled units)
    seed: int = 0
    device: str = "auto"  # "auto": CUDA when available
    train_decoder: bool = True  # False: fit only the encoder (and biases) to a fixed dictionary

    def __post_init__(self) -> None:
        expect(self.architecture in ARCHITECTURES,
               f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        expect(self.d_sae >= 1, f"d_sae must be positive, got {self.d_sae}")
        expect(self.k is None or 1 <= self.k <= self.d_sae, f"k must be in [1, d_sae={self.d_sae}], got {self.k}")
        expect(self.epochs is None or self.epochs > 0, f"epochs must be positive, got {self.epochs}")
        expect(self.batch_size >= 1, f"batch_size must be positive, got {self.batch_size}")
        expect(self.lr is None or self.lr > 0, f"lr must be positive, got {self.lr}")
        expect(0 <= self.decay_frac <= 1, f"decay_frac must be in [0, 1], got {self.decay_frac}")
        expect(self.b_dec_init in ("median", "mean"), f"b_dec_init must be 'median' or 'mean', got {self.b_dec_init!r}")
        expect(min(self.bandwidth, self.l1_coeff, self.l0_coeff, self.threshold_init) > 0,
               "bandwidth, l1_coeff, l0_coeff and threshold_init must be positive")


@dataclass
class TrainResult:
    sae: SAE
    stats: dict  # final fvu, l0, dead/dense fractions on up to EVAL_ROWS rows, and the run's figures


# ------------------------------------------------------------------------------------ data order
class BatchStream:
    """The batches of one epoch: blocks of BLOCK_ROWS consecutive rows in a random order, grouped
    into pools whose rows are shuffled together, cut into batches of ``batch_size`` rows
    (the remainder of an epoch is dropped). Everything follows from (seed, epoch), so a resumed
    run can start at any batch without reading the batches before it."""

    def __init__(self, acts: Activations, batch_size: int, seed: int, device: torch.device):
        self.acts, self.seed, self.device = acts, seed, device
        self.batch_size = min(batch_size, acts.n_rows)
        self.steps_per_epoch = acts.n_rows // self.batch_size
        self.n_blocks = -(-acts.n_rows // BLOCK_ROWS)
        self.pool_blocks = max(1, POOL_BYTES // (4 * acts.d * BLOCK_ROWS))

    def _block_sizes(self, blocks: np.ndarray) -> np.ndarray:
        return np.minimum(BLOCK_ROWS, self.acts.n_rows - blocks * BLOCK_ROWS)

    def _pool(self, epoch: int, j: int, blocks: np.ndarray) -> torch.Tensor:
        x = torch.cat([self.acts.rows(int(b) * BLOCK_ROWS, min((int(b) + 1) * BLOCK_ROWS, self.acts.n_rows))
                       for b in blocks])
        perm = np.random.default_rng([self.seed, epoch, j, 1]).permutation(len(x))
        return x[torch.from_numpy(perm)].to(self.device)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(self.n_blocks)
        pools = [order[i:i + self.pool_blocks] for i in range(0, self.n_blocks, self.pool_blocks)]
        ends = np.cumsum([self._block_sizes(p).sum() for p in pools])
        pos, stop = start * self.batch_size, self.steps_per_epoch * self.batch_size
        j = int(np.searchsorted(ends, pos, side="right"))
        pending: list[torch.Tensor] = []
        have = 0
        while pos < stop:
            data = self._pool(epoch, j, pools[j])
            off = pos - (int(ends[j - 1]) if j else 0)
            while off < len(data) and pos < stop:
                take = min(self.batch_size - have, len(data) - off)
                pending.append(data[off:off + take])
                have, off, pos = have + take, off + take, pos + take
                if have == self.batch_size:
                    yield pending[0] if len(pending) == 1 else torch.cat(pending)
                    pending, have = [], 0
            j += 1


# ------------------------------------------------------------------ straight-through estimators
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


# ------------------------------------------------------------------------------------- helpers
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


def _sample_rows(acts: Activations, n: int) -> torch.Tensor:
    """Up to ``n`` rows in evenly spaced blocks (all rows when there are few)."""
    if acts.n_rows <= n:
        return acts.rows(0, acts.n_rows)
    n_blocks = max(1, n // BLOCK_ROWS)
    starts = np.linspace(0, acts.n_rows - BLOCK_ROWS, n_blocks).astype(np.int64)
    return torch.cat([acts.rows(int(s), int(s) + BLOCK_ROWS) for s in starts])


def _moments(acts: Activations, progress: bool) -> tuple[torch.Tensor, float]:
    """Mean row and E||x - mean||² in one streaming pass (float64 sums)."""
    s = torch.zeros(acts.d, dtype=torch.float64)
    s2 = 0.0
    for x in tqdm(acts.batches(65536), total=-(-acts.n_rows // 65536), disable=not progress,
                  desc="scan data", leave=False):
        xd = x.double()
        s += xd.sum(0)
        s2 += float((xd * xd).sum())
    mean = s / acts.n_rows
    return mean.float(), max(s2 / acts.n_rows - float((mean * mean).sum()), 0.0)


def default_k(d_in: int, d_sae: int) -> int:
    return min(d_sae, 32, max(1, d_in // 8))


def default_lr(d_sae: int) -> float:
    # the 1/sqrt(D) scaling of the TopK paper, at the size of our batches
    return min(3e-3, 2e-3 / math.sqrt(d_sae / 512))


# ------------------------------------------------------------------------------------- trainer
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
            expect(init.cfg.architecture == arch,
                   f"init SAE is {init.cfg.architecture!r}, training asks for {arch!r}")
        self.k = int(init.cfg.k) if init is not None and arch == "topk" else (cfg.k or default_k(d, cfg.d_sae))
        self.d_sae = init.d_sae if init is not None else cfg.d_sae
        self.stream = BatchStream(self.acts, cfg.batch_size, cfg.seed, self.device)
        epochs = cfg.epochs or max(1, math.ceil(DEFAULT_TRAIN_ROWS / (self.stream.steps_per_epoch * self.stream.batch_size)))
        self.total_steps = max(1, round(epochs * self.stream.steps_per_epoch))
        self.warmup = cfg.warmup_steps if cfg.warmup_steps is not None else min(1000, self.total_steps // 20)
        self.lr = cfg.lr or default_lr(self.d_sae)
        self.aux_k = min(self.d_sae, d // 2 if cfg.aux_k is None else cfg.aux_k)
        self.dead_rows = cfg.dead_rows or min(self.acts.n_rows, 10_000_000)

        self.mean, var = _moments(self.acts, progress)
        self.scale = math.sqrt(d / var) if cfg.normalize and var > 0 else 1.0
        self.var = max(var, 1e-30) * self.scale ** 2  # E||x - mean||² in training units
        # the model trains in scaled units: latents and biases scale with the data, W_* do not
        model_arch = "topk" if arch == "topk" else ("relu" if arch in ("relu", "batchtopk") else "jumprelu")
        if init is not None:
            self.sae = SAE(init.cfg)
            self.sae.load_state_dict(init.state_dict())
            with torch.no_grad():
                for p in (self.sae.b_enc, self.sae.b_dec):
                    p.mul_(self.scale)
        else:
            self.sae = SAE.random(SAEConfig(model_arch, d_in=d, d_sae=self.d_sae,
                                            k=self.k if arch == "topk" else None), seed=cfg.seed)
            with torch.no_grad():
                if cfg.b_dec_init == "median":
                    self.sae.b_dec.copy_(geometric_median(_sample_rows(self.acts, 16384)) * self.scale)
                else:
                    self.sae.b_dec.copy_(self.mean * self.scale)
        self.sae.to(self.device)
        self.sae.W_dec.requires_grad_(cfg.train_decoder)
        self.log_threshold = None
        if arch == "jumprelu":
            self.sae.threshold.requires_grad_(False)  # trained through log_threshold
            self.log_threshold = torch.nn.Parameter(self._initial_log_threshold(init))
        params = [p for p in self.sae.parameters() if p.requires_grad]
        if self.log_threshold is not None:
            params.append(self.log_threshold)
        self.opt = torch.optim.Adam(params, lr=self.lr, betas=(0.9, 0.999))
        self.step = 0
        self.since_fired = torch.zeros(self.d_sae, dtype=torch.long, device=self.device)
        self.log_coeff = math.log(cfg.l1_coeff)
        self.ema: dict[str, float] = {}

    def _initial_log_threshold(self, init: SAE | None) -> torch.Tensor:
        if init is not None:
            return init.threshold.detach().to(self.device).mul(self.scale).clamp_min(1e-6).log()
        # a low threshold: every latent starts live and receives gradient; the L0 penalty then
        # raises the thresholds (starting at L0 ≈ k instead leaves most latents dead)
        return torch.full((self.d_sae,), math.log(self.cfg.threshold_init), device=self.device)

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
        cfg, sae, arch = self.cfg, self.sae, self.cfg.architecture
        x = x * self.scale
        pre = sae.pre_acts(x)
        penalty = pre.new_zeros(())
        if arch == "topk":
            vals, idx = pre.topk(self.k, dim=1, sorted=False)
            vals = torch.relu(vals)
            x_hat = F.embedding_bag(idx, sae.W_dec, per_sample_weights=vals, mode="sum") + sae.b_dec
            fired = idx[vals > 0]
            l0 = float((vals > 0).sum()) / len(x)
        else:
            if arch == "batchtopk":
                flat = torch.relu(pre).flatten()
                top = flat.topk(self.k * len(x), sorted=False)
                z = torch.zeros_like(flat).scatter(0, top.indices, top.values).view_as(pre)
            elif arch == "jumprelu":
                theta = self.log_threshold.exp()
                z = _JumpReLU.apply(pre, theta, cfg.bandwidth)
                l0_st = _Step.apply(pre, theta, cfg.bandwidth).sum(1).mean()
                # quadratic pull of the batch L0 towards k (dictionary_learning's target-L0 loss)
                penalty = cfg.l0_coeff * self.acts.d * (l0_st / self.k - 1) ** 2
            else:
                z = torch.relu(pre)
                penalty = z.sum(1).mean()  # L1 of z·||W_dec row||, the rows being unit norm
            x_hat = z @ sae.W_dec + sae.b_dec
            active = z > 0
            fired = active.any(0).nonzero().squeeze(1)
            l0 = float(active.sum()) / len(x)
        err = x - x_hat  # the residual AuxK learns
        mse = err.pow(2).sum(1).mean()
        aux = self._aux_loss(pre, err.detach())
        if arch == "relu":
            penalty = math.exp(self.log_coeff) * penalty
        loss = mse + cfg.aux_alpha * aux + penalty
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
            self.since_fired[fired] = 0
        if arch == "relu":
            # multiplicative controller: raise the penalty while L0 is above k, lower it below
            self.log_coeff += cfg.controller_rate * max(-1.0, min(1.0, l0 / self.k - 1))
        self.step += 1
        return {"loss": loss.item(), "fvu": mse.item() / self.var, "l0": l0}

    # ------------------------------------------------------------------ run, checkpoint, finish
    def run(self, checkpoint: str | os.PathLike | None = None, checkpoint_every_s: float = 300.0) -> None:
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
                    if checkpoint is not None and time.monotonic() - last_save > checkpoint_every_s:
                        self.save_checkpoint(checkpoint)
                        last_save = time.monotonic()
                    if self.step >= self.total_steps:
                        break
        except KeyboardInterrupt:
            if checkpoint is not None:
                self.save_checkpoint(checkpoint)
            raise
        finally:
            bar.close()

    def _fingerprint(self) -> dict:
        return {"cfg": asdict(self.cfg), "n_rows": self.acts.n_rows, "d": self.acts.d, "d_sae": self.d_sae,
                "k": self.k, "total_steps": self.total_steps}

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        state = {"version": CHECKPOINT_VERSION, "fingerprint": self._fingerprint(), "step": self.step,
                 "sae": self.sae.state_dict(), "opt": self.opt.state_dict(), "since_fired": self.since_fired,
                 "log_coeff": self.log_coeff, "log_threshold": self.log_threshold, "ema": self.ema}
        with atomic_file(path) as f:
            torch.save(state, f)

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        try:
            state = torch.load(path, map_location=self.device, weights_only=True)
        except FileNotFoundError:
            raise MdlsaeError(f"checkpoint {str(path)!r} does not exist") from None
        except Exception as e:
            raise MdlsaeError(f"{path}: not a readable mdlsae checkpoint ({e})") from None
        expect(isinstance(state, dict) and state.get("version") == CHECKPOINT_VERSION,
               f"{path}: not an mdlsae checkpoint of version {CHECKPOINT_VERSION}")
        mine = self._fingerprint()
        diff = sorted(k for k in mine if state["fingerprint"].get(k) != mine[k])
        expect(not diff, f"{path} was written by a different run (differs in {', '.join(diff)}); "
                         "use the same data and settings, or start afresh")
        self.sae.load_state_dict(state["sae"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.log_coeff, self.ema = state["step"], state["log_coeff"], state["ema"]
        self.since_fired.copy_(state["since_fired"])
        if self.log_threshold is not None:
            self.log_threshold.data.copy_(state["log_threshold"])

    def finish(self) -> TrainResult:
        """The SAE in raw-activation units (BatchTopK as JumpReLU) and its final statistics."""
        s = self.scale
        arch = "topk" if self.cfg.architecture == "topk" else ("relu" if self.cfg.architecture == "relu" else "jumprelu")
        sae = SAE(SAEConfig(arch, d_in=self.acts.d, d_sae=self.d_sae, k=self.k if arch == "topk" else None))
        src = self.sae.to("cpu")
        with torch.no_grad():
            # latents of x are those of s·x divided by s: W_* unchanged, biases and threshold / s
            sae.W_enc.copy_(src.W_enc)
            sae.W_dec.copy_(src.W_dec)
            sae.b_enc.copy_(src.b_enc / s)
            sae.b_dec.copy_(src.b_dec / s)
        sample = _sample_rows(self.acts, min(EVAL_ROWS, POOL_BYTES // (4 * self.acts.d)))
        if self.cfg.architecture == "jumprelu":
            with torch.no_grad():
                sae.threshold.copy_(self.log_threshold.detach().cpu().exp() / s)
        elif self.cfg.architecture == "batchtopk":
            with torch.no_grad():
                sae.threshold.fill_(batchtopk_threshold(sae, sample, self.k))
        stats = evaluate(sae, sample)
        stats.update(steps=self.step, rows_seen=self.step * self.stream.batch_size, scale=s, lr=self.lr,
                     k=self.k, epochs=self.step / self.stream.steps_per_epoch)
        return TrainResult(sae.eval(), stats)


# ------------------------------------------------------------------------------------- metrics
@torch.no_grad()
def batchtopk_threshold(sae: SAE, x: torch.Tensor, k: int, chunk: int = 4096) -> float:
    """The inference threshold of a BatchTopK SAE: the mean over chunks of the smallest value
    that BatchTopK keeps, so that thresholding gives L0 ≈ k."""
    ts, ws = [], []
    for i in range(0, len(x), chunk):
        r = torch.relu(sae.pre_acts(x[i:i + chunk])).flatten()
        n = min(k * len(x[i:i + chunk]), r.numel())
        ts.append(float(r.topk(n, sorted=False).values.min()))
        ws.append(n)
    return float(np.average(ts, weights=ws))


@torch.no_grad()
def evaluate(sae: SAE, acts, batch_rows: int = 4096) -> dict:
    """FVU, mean L0, fraction of latents that never fire (dead) and that fire on more than
    10 % of rows (dense), over ``acts``."""
    acts = as_activations(acts)
    sse = s2 = 0.0
    s1 = torch.zeros(acts.d, dtype=torch.float64)
    counts = torch.zeros(sae.d_sae, dtype=torch.float64)
    for x in acts.batches(batch_rows):
        z = sae.encode(x)
        sse += float((sae.decode(z) - x).double().pow(2).sum())
        s1 += x.double().sum(0)
        s2 += float(x.double().pow(2).sum())
        counts += (z > 0).sum(0).double()
    n = acts.n_rows
    var = s2 - float((s1 ** 2).sum()) / n
    rate = counts / n
    return {"fvu": sse / var if var > 0 else math.inf, "l0": float(counts.sum()) / n,
            "dead_frac": float((rate == 0).double().mean()), "dense_frac": float((rate > 0.1).double().mean()),
            "eval_rows": n}


def train(acts, cfg: TrainConfig, progress: bool = False, init: SAE | None = None,
          checkpoint: str | os.PathLike | None = None, resume: bool = False,
          checkpoint_every_s: float = 300.0) -> TrainResult:
    """Train an SAE on ``acts`` (anything :class:`~mdlsae.acts.Activations` accepts), from ``init``
    when given. With ``checkpoint``, progress is saved there every ``checkpoint_every_s`` seconds
    and on Ctrl-C; ``resume`` continues from it (it must come from the same data and settings)."""
    t0 = time.perf_counter()
    trainer = Trainer(acts, cfg, init, progress)
    if resume:
        expect(checkpoint is not None, "resume needs a checkpoint path")
        trainer.load_checkpoint(checkpoint)
    start = trainer.step
    t1 = time.perf_counter()
    trainer.run(checkpoint=checkpoint, checkpoint_every_s=checkpoint_every_s)
    t2 = time.perf_counter()
    result = trainer.finish()
    result.stats.update(seconds=time.perf_counter() - t0,
                        rows_per_s=(trainer.step - start) * trainer.stream.batch_size / max(t2 - t1, 1e-9))
    return result


def train_sae(acts, cfg: TrainConfig, progress: bool = False, init: SAE | None = None) -> SAE:
    """:func:`train` returning only the SAE."""
    return train(acts, cfg, progress=progress, init=init).sae
