"""Training hyper-parameters, their defaults and the result of a run.

Shared by the loop, the objectives and the CLI; imports only the base layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import expect
from .objectives import OBJECTIVES

ARCHITECTURES = tuple(OBJECTIVES)
DEFAULT_TRAIN_ROWS = 1_500_000  # rows seen by default: small datasets get several epochs
POOL_BYTES = 256 << 20  # rows shuffled together in memory
BLOCK_ROWS = 1024  # contiguous rows read at once from the source
EVAL_ROWS = 131_072  # rows (at most POOL_BYTES) for the final statistics and BatchTopK threshold


@dataclass
class TrainConfig:
    """Hyper-parameters; ``None`` means a default derived from the data and the SAE size."""

    architecture: str = "topk"
    d_sae: int = 512
    k: int | None = None  # L0 (see mdlsae.models.train); default min(32, max(1, d_in // 8))
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
    groups: list[int] | None = None  # matryoshka: group sizes summing to d_sae (default D/16, D/16, D/8, D/4, D/2)
    branching: list[int] | None = None  # tree from scratch: children per latent, level by level (default [4])
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
    sae: object  # mdlsae.SAE, in raw-activation units
    stats: dict  # final fvu, l0, dead/dense fractions on up to EVAL_ROWS rows, and the run's figures


def default_k(d_in: int, d_sae: int) -> int:
    return min(d_sae, 32, max(1, d_in // 8))


def default_lr(d_sae: int) -> float:
    # the 1/sqrt(D) scaling of the TopK paper, at the size of our batches
    return min(3e-3, 2e-3 / math.sqrt(d_sae / 512))
