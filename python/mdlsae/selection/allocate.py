"""Per-feature quantization steps (seed 000's question): spend precision where it buys the most
loss per bit, so the DL is smaller than with one global step at the same tolerance ε.

Lagrangian rate–distortion allocation. Every feature i picks its step from a geometric grid
that runs from Δ_g/8 (Δ_g the best global step) up to where every value rounds to 0, plus
"off" (a step so coarse that all of the feature's values round to 0): the best step of a
feature can be far coarser than Δ_g, e.g. when its magnitude hardly matters.
For each grid step we know, per feature and exactly on the sample,
  - the rate R_i: its DL estimate H_i in bits per row (the estimate is a sum over features,
    so the DL of any allocation is exactly Σ_i R_i), and
  - a distortion model D_i: Σ over its active rows of (z - q·Δ)²·||W_dec,i||², which counts the
    rounding error and the loss of latents that round to 0. It ignores cross-terms between
    features' errors, so it only *ranks* choices; feasibility is always checked for real.
For a multiplier λ each feature independently minimises R_i + λ·D_i (vectorised over features).
Larger λ means finer steps, more bits and (mostly) lower loss: a scan of λ on a ×4 ladder and
a bisection below the smallest passing λ, with every candidate allocation evaluated by a real
quantize-and-reconstruct on the sample with the user's loss, find the cheapest allocation
meeting ε. If none beats the global step, the global step is returned: never worse than the
best global step, by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .precision import Evaluator, Point, Precision

GRID_RATIO = 2 ** 0.125
GRID_FINEST = -24  # grid exponent of the finest step: Δ_g / 8
GRID_MAX_POINTS = 240
LADDER = 8  # multipliers λ0·4^m, |m| <= LADDER, scanned before bisecting


@dataclass
class Allocation:
    steps: np.ndarray  # float32 [d_sae]
    point: Point  # the real evaluation at ``steps``
    global_point: Point  # the best global step's evaluation, for comparison
    fallback: bool  # True when no per-feature allocation beat the global step
    lam: float | None  # the multiplier of the chosen allocation
    evaluations: int

    @property
    def saving(self) -> float:
        """Fraction of the global step's DL saved (>= 0)."""
        g = self.global_point.dl_bits_per_row
        return 1.0 - self.point.dl_bits_per_row / g if g > 0 else 0.0


def rate_distortion_tables(ev: Evaluator, base_step: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(steps, R, D), each [n_choices, d_sae]: the grid steps and "off" per feature, the rate in
    bits per row and the modelled squared error per row of every choice."""
    lat = ev.latents
    d, n = lat.d_sae, lat.n_rows
    wnorm2 = (lat.W_dec.double() ** 2).sum(dim=1).numpy()
    v = lat.value.astype(np.float64)
    top = np.log(2.5 * max(float(v.max(initial=0)), base_step) / base_step) / np.log(GRID_RATIO)
    grid = (base_step * GRID_RATIO ** np.arange(GRID_FINEST, min(int(np.ceil(top)), GRID_FINEST + GRID_MAX_POINTS) + 1))
    grid = np.maximum(grid, v.max(initial=0) / 2 ** 23).astype(np.float32)  # q stays in the kernel's range
    steps = np.empty((len(grid) + 1, d), dtype=np.float32)
    R = np.zeros((len(grid) + 1, d))
    D = np.empty((len(grid) + 1, d))
    for j, s in enumerate(grid):
        q = lat.quantize_values(s)
        steps[j] = s
        R[j] = lat.stats(q).bits_per_row(conditional=False)
        D[j] = np.bincount(lat.index, weights=(v - q * float(s)) ** 2, minlength=d) * wnorm2 / n
    # "off": every value rounds to 0 (rint(z/Δ) = 0 for z < Δ/2); costs no bits at all
    vmax = np.zeros(d, dtype=np.float32)
    np.maximum.at(vmax, lat.index, lat.value)
    steps[-1] = np.where(vmax > 0, 2.5 * vmax, base_step)
    D[-1] = np.bincount(lat.index, weights=v ** 2, minlength=d) * wnorm2 / n
    return steps, R, D


def allocate_steps(ev: Evaluator, base: Precision, max_evaluations: int = 48) -> Allocation:
    """Per-feature steps with the smallest DL found whose loss meets ``base.tolerance`` on the
    sample, never worse than the global step ``base`` (which must meet the tolerance)."""
    tol = base.tolerance
    g = base.point
    start_evals = ev.evaluations
    if not base.meets:
        return Allocation(np.full(ev.latents.d_sae, base.step, np.float32), g, g, True, None, 0)
    steps, R, D = rate_distortion_tables(ev, base.step)
    cols = np.arange(steps.shape[1])
    j0 = -GRID_FINEST  # the row of the global step
    tried: dict[bytes, tuple[float, Point]] = {}  # allocation -> (first multiplier, evaluation)

    def choice(lam: float) -> np.ndarray:
        return np.argmin(R + lam * D, axis=0)

    def at(lam: float) -> Point:
        c = choice(lam)
        key = c.astype(np.int16).tobytes()
        if key not in tried:
            tried[key] = (lam, ev.evaluate(steps[c, cols]))
        return tried[key][1]

    # multipliers around the global operating point's own slope -dR/dD; the real loss is not
    # monotone in λ (coarse steps can even denoise), so scan a wide ×4 ladder first, then
    # bisect below the smallest passing λ (the rate only grows with λ)
    dR = R[j0].sum() - R[j0 + 1].sum()
    dD = D[j0 + 1].sum() - D[j0].sum()
    lam0 = dR / dD if dR > 0 and dD > 0 else 1.0 / max(D[j0].mean(), 1e-30)
    ladder = [lam0 * 4.0 ** m for m in range(-LADDER, LADDER + 1)]
    hi = next((lam for lam in ladder if at(lam).loss <= tol), None)
    if hi is not None:
        lo = hi / 4
        # down to allocations one feature apart: the hull points near ε are close together
        while (np.count_nonzero(choice(lo) != choice(hi)) > 1 and hi / lo > 1.0001
               and ev.evaluations - start_evals < max_evaluations):
            mid = float(np.sqrt(lo * hi))
            if at(mid).loss <= tol:
                hi = mid
            else:
                lo = mid
    passing = [(lam, p) for lam, p in tried.values() if p.loss <= tol]
    best = min(passing, key=lambda t: t[1].dl_bits_per_row, default=None)
    used = ev.evaluations - start_evals
    if best is None or best[1].dl_bits_per_row >= g.dl_bits_per_row:
        return Allocation(np.full(steps.shape[1], base.step, np.float32), g, g, True, None, used)
    return Allocation(np.asarray(best[1].step, np.float32), best[1], g, False, best[0], used)
