"""The feature-splitting toy of seed 002 §7: two boolean features A and B with directions f_A,
f_B, so a row is one of 0, f_A, f_B, f_A + f_B. Two SAEs reconstruct every row exactly:
  - "no split": features A and B, DL = h(p_A) + h(p_B) bits per row;
  - "split": A∧¬B, B∧¬A and the composite A∧B (direction (f_A+f_B)/√2, value √2),
    DL = h(p_A − p_AB) + h(p_B − p_AB) + h(p_AB)
(all values are constant, so the value entropy is 0). The split SAE always has the smaller L0
(p_A + p_B − p_AB), but it has the smaller DL only when A and B are correlated enough: the
phase diagram over (p, ρ) with p_A = p_B = p.

The analytic DL is checked against the package's own estimator on sampled rows, with both SAEs
built as JumpReLU SAEs and measured at their effective precision like any other SAE, and against
real files: :func:`encoded_file_bits` encodes the rows with the codec and reads the file's size.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..data.acts import as_activations
from ..measure.entropy import binary_entropy
from ..errors import expect
from ..models.sae import SAE, SAEConfig


def p_and(p_a: np.ndarray, p_b: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """P(A∧B) of booleans with marginals p_a, p_b and correlation coefficient rho; NaN where
    no joint distribution has that correlation."""
    p_a, p_b, rho = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (p_a, p_b, rho)))
    p_ab = p_a * p_b + rho * np.sqrt(p_a * (1 - p_a) * p_b * (1 - p_b))
    feasible = (p_ab >= np.maximum(0, p_a + p_b - 1) - 1e-12) & (p_ab <= np.minimum(p_a, p_b) + 1e-12)
    return np.where(feasible, np.clip(p_ab, 0, None), np.nan)


def analytic_dl(p_a, p_b, p_ab) -> tuple[np.ndarray, np.ndarray]:
    """(DL without, DL with the composite feature) in bits per row."""
    p_a, p_b, p_ab = (np.asarray(v, dtype=np.float64) for v in (p_a, p_b, p_ab))
    two = binary_entropy(p_a) + binary_entropy(p_b)
    three = binary_entropy(p_a - p_ab) + binary_entropy(p_b - p_ab) + binary_entropy(p_ab)
    return two, three


def phase_grid(ps: np.ndarray, rhos: np.ndarray) -> np.ndarray:
    """Fraction of the DL saved by the composite feature, (DL_no_split − DL_split) / DL_no_split,
    [len(rhos), len(ps)], p_A = p_B = p; NaN where (p, ρ) is infeasible."""
    P, R = np.meshgrid(ps, rhos)
    p_ab = p_and(P, P, R)
    two, three = analytic_dl(P, P, np.nan_to_num(p_ab))
    return np.where(np.isnan(p_ab), np.nan, (two - three) / two)


def boundary_rho(p: float, tol: float = 1e-6) -> float:
    """The correlation above which the composite feature shortens the DL (p_A = p_B = p)."""
    # the least feasible ρ has P(A∧B) = max(0, 2p − 1), where both codes cost the same; the
    # saving is negative just above it and positive at ρ = 1
    lo, hi = (max(0.0, 2 * p - 1) - p * p) / (p * (1 - p)), 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        two, three = analytic_dl(p, p, p_and(p, p, mid))
        lo, hi = (lo, mid) if two - three > 0 else (mid, hi)
    return hi


def sample_rows(n: int, p_a: float, p_b: float, rho: float, d: int = 8, seed: int = 0):
    """(x float32 [n, d], A bool [n], B bool [n], f [2, d] orthonormal) with the given joint law."""
    p_ab = float(p_and(p_a, p_b, rho))
    expect(not np.isnan(p_ab), f"no boolean pair has P(A)={p_a}, P(B)={p_b} and correlation {rho}")
    rng = np.random.default_rng(seed)
    probs = np.array([p_ab, p_a - p_ab, p_b - p_ab, 1 - p_a - p_b + p_ab]).clip(0)
    outcome = rng.choice(4, size=n, p=probs / probs.sum())
    a, b = outcome <= 1, (outcome == 0) | (outcome == 2)
    f = np.linalg.qr(rng.standard_normal((d, 2)))[0].T.astype(np.float32)
    x = a[:, None] * f[0] + b[:, None] * f[1]
    return x.astype(np.float32), a, b, f


def split_saes(f: np.ndarray) -> tuple[SAE, SAE]:
    """(no-split SAE, split SAE) for directions f [2, d]: JumpReLU with threshold 0.5, both
    reconstructing every row 0, f_A, f_B, f_A + f_B exactly from unquantized latents."""
    fa, fb = (torch.from_numpy(v) for v in f)
    d = fa.shape[0]
    r2 = 2 ** 0.5

    def build(dec: list, enc: list, b_enc: list) -> SAE:
        sae = SAE(SAEConfig("jumprelu", d_in=d, d_sae=len(dec)))
        with torch.no_grad():
            sae.W_dec.copy_(torch.stack(dec))
            sae.W_enc.copy_(torch.stack(enc).T)
            sae.b_enc.copy_(torch.tensor(b_enc))
            sae.threshold.fill_(0.5)
        return sae

    two = build([fa, fb], [fa, fb], [0.0, 0.0])
    # A∧¬B: x·(f_A − f_B) is 1 only on f_A; A∧B: √2·(x·(f_A + f_B) − 1) is √2 only on f_A + f_B
    three = build([fa, fb, (fa + fb) / r2], [fa - fb, fb - fa, r2 * (fa + fb)], [0.0, 0.0, -r2])
    return two, three


@dataclass
class FileBits:
    """Sizes of a real ``.mdl`` file (totals over its rows), beside the DL estimate of its codes."""

    n_rows: int
    payload_bits: int  # the coded chunks: what the DL estimate predicts
    model_bits: int  # header (entropy tables, steps, SAE hash) and chunk index
    estimate_bits: float  # N · Σ_i H_i of the codes in the file
    n_streams: int  # independently coded streams (chunks × feature groups)

    @property
    def payload_bits_per_row(self) -> float:
        return self.payload_bits / max(self.n_rows, 1)

    @property
    def file_bits_per_row(self) -> float:
        return (self.payload_bits + self.model_bits) / max(self.n_rows, 1)

    def to_dict(self) -> dict:
        return {**asdict(self), "payload_bits_per_row": self.payload_bits_per_row,
                "file_bits_per_row": self.file_bits_per_row}


def encoded_file_bits(acts, sae: SAE, step, chunk_rows: int | None = None) -> FileBits:
    """Encode ``acts`` with ``sae`` at ``step`` into a real ``.mdl`` file (a temporary one) and
    read back its sizes with :func:`mdlsae.codec.inspect`. One chunk holds all rows unless
    ``chunk_rows`` says otherwise, so the payload is one stream and its excess over the estimate
    is the coder's own (rANS loss and the few dozen bits that frame and end a stream)."""
    from ..codec import api as codec

    acts = as_activations(acts)
    chunk_rows = chunk_rows or max(acts.n_rows, 1)
    with tempfile.TemporaryDirectory(prefix="mdlsae-split-") as tmp:
        info = codec.encode(acts, sae, os.path.join(tmp, "toy.mdl"), step, chunk_rows=chunk_rows)
    return FileBits(info.n_rows, info.payload_bits, info.model_bits, info.estimate_bits, info.n_chunks)
