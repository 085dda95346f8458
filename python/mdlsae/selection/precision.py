"""Effective precision (DESIGN §2): the coarsest quantization step whose reconstruction loss
stays within a tolerance ε, and the description length there.

The SAE's selection (TopK, threshold or ReLU) does not depend on the step, so the selected,
*unquantized* latents of a row sample are computed once and kept sparse (n·L0 values, whatever
the width). Every evaluated step then only re-quantizes those values (DESIGN §2 semantics,
checked bit-for-bit against the fused kernel in the tests), rebuilds the per-feature histograms
with the native :class:`~mdlsae.kernels.Histogram` and reconstructs: a real evaluation, no
model. The loss is MSE, FVU or any callable ``loss(x, x_hat) -> float`` over the whole sample
(e.g. a downstream loss with the reconstruction spliced back into a model), so the search
treats all three alike.

Search: evaluate a ×2 geometric grid from a first guess up to the step where every value
rounds to 0 (loss-vs-step is near-monotone but not quite: coarse steps can drop spurious small
latents and *lower* the loss), take the coarsest grid point meeting ε (walking down if none
does), then bisect the bracket above it geometrically to ``rel_tol``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Union

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed
from ..data.acts import as_activations
from ..measure.codes import SparseCodes, steps_tensor
from ..measure.entropy import FeatureStats
from ..errors import MdlsaeError, expect
from ..measure.kernels import Histogram
from ..budget import rows_for
from ..measure.dl import ErrorStats
from ..models.sae import SAE
from ..models.topk import fast_topk_mask
from ..models.tree import TreeRule

LossFn = Callable[[torch.Tensor, torch.Tensor], float]
Metric = Union[str, LossFn]
METRICS = ("mse", "fvu")
MAX_Q = 1 << 24  # the fused kernel's limit on a quantized value (csrc/common/quantize.h)


def resolve_metric(metric: Metric) -> tuple[str, LossFn | None]:
    """(name, callable or None for the built-in MSE/FVU computed from ErrorStats)."""
    if callable(metric):
        return getattr(metric, "__name__", "custom"), metric
    expect(metric in METRICS, f"metric must be one of {', '.join(METRICS)} or a callable, got {metric!r}")
    return metric, None


def select_sparse(pre: torch.Tensor, k: int, threshold: np.ndarray | None,
                  tree: TreeRule | None = None) -> tuple[torch.Tensor, ...]:
    """(rows, features, values) of the positive selected latents, with the fused kernel's
    selection rule: TopK with ties to the lower feature index (k > 0; over the roots of a
    ``tree``, then its children), else ``pre > threshold`` (a tree's roots, then its children)."""
    if tree is not None:
        thr = None if k > 0 else torch.from_numpy(threshold).to(pre.device)
        r, c = torch.nonzero(tree.mask(pre, k or None, threshold=thr), as_tuple=True)
        return r, c, pre[r, c]
    if k <= 0:
        thr = torch.zeros(()) if threshold is None else torch.from_numpy(threshold).to(pre.device).clamp_min(0)
        r, c = torch.nonzero(pre > thr, as_tuple=True)
        return r, c, pre[r, c]
    keep = fast_topk_mask(pre, k)
    r, c = torch.nonzero(keep & (pre > 0), as_tuple=True)
    return r, c, pre[r, c]


@dataclass
class SparseLatents:
    """The selected, unquantized latents of an SAE on the first ``n_rows`` rows of a dataset,
    row-major sparse like :class:`~mdlsae.codes.SparseCodes` but with float values. Memory:
    4·d_in + 8·L0 bytes per row."""

    x: torch.Tensor  # float32 [n, d_in], the rows themselves (for the loss)
    row_ptr: np.ndarray  # int64 [n + 1]
    index: np.ndarray  # int32 [nnz]
    value: np.ndarray  # float32 [nnz], > 0
    W_dec: torch.Tensor
    b_dec: torch.Tensor

    @classmethod
    def from_sae(cls, acts, sae: SAE, max_rows: int | None = None, batch_rows: int | None = None,
                 progress: bool = False) -> "SparseLatents":
        acts = as_activations(acts)
        # beside the pre-activations, select_sparse's torch masks: two bools per latent
        batch_rows = batch_rows or rows_for(sae.row_bytes() + 2 * sae.d_sae)
        expect(acts.d == sae.d_in, f"{acts.name}: activations have d_in={acts.d} but the SAE expects d_in={sae.d_in}")
        n = acts.n_rows if max_rows is None else min(acts.n_rows, max_rows)
        expect(n > 0, f"{acts.name}: no rows to evaluate")
        k, threshold, parents = sae.selection()
        dev = sae.W_enc.device
        tree = None if parents is None else sae.tree_rule(dev)
        # under torch.distributed each rank runs the SAE on its share; the latents are gathered
        # and the step search then runs on every rank alike, as in one process
        start, stop = distributed.share(n)
        xs, counts, cols, vals = [], [np.zeros(0, np.int64)], [np.zeros(0, np.int32)], [np.zeros(0, np.float32)]
        bar = tqdm(total=stop - start, unit="row", unit_scale=True, disable=not (progress and distributed.is_main()),
                   desc="encode")
        with torch.no_grad(), distributed.agreed("the encoder pass"):
            for x in acts.batches(batch_rows, start, stop):  # on the SAE's device, the latents back to the host
                r, c, v = (t.cpu() for t in select_sparse(sae.pre_acts(x.to(dev)), k, threshold, tree))
                xs.append(x)
                counts.append(np.bincount(r.numpy(), minlength=x.shape[0]))
                cols.append(c.numpy().astype(np.int32))
                vals.append(v.numpy().astype(np.float32))
                bar.update(x.shape[0])
        bar.close()
        parts = distributed.gather(tuple(np.concatenate(a) for a in (counts, cols, vals)))
        row_ptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.concatenate([p[0] for p in parts]), out=row_ptr[1:])
        x = torch.cat(xs) if len(parts) == 1 else acts.rows(0, n)
        return cls(x, row_ptr, np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                   sae.W_dec.detach().float().cpu(), sae.b_dec.detach().float().cpu())

    @property
    def n_rows(self) -> int:
        return len(self.row_ptr) - 1

    @property
    def d_sae(self) -> int:
        return self.W_dec.shape[0]

    def entry_steps(self, step) -> np.ndarray:
        """The step of every stored value (float32 [nnz], or a scalar for a global step)."""
        st = steps_tensor(step, self.d_sae).numpy()
        return st[self.index] if st.ndim else st

    def quantize_values(self, step) -> np.ndarray:
        """q of every stored value, zeros included (float32 [nnz]): DESIGN §2's rint(z / Δ) in
        float32 (one IEEE division, round half to even), as the fused kernel computes it."""
        q = np.rint(self.value / self.entry_steps(step))
        if len(q) and float(q.max()) >= MAX_Q:
            raise MdlsaeError(f"step too small: a latent quantizes to {float(q.max()):.3g} >= 2^24")
        return q

    def stats(self, q: np.ndarray) -> FeatureStats:
        """Per-feature statistics of the codes with quantized values ``q`` (active iff q >= 1)."""
        keep = q >= 1
        hist = Histogram(self.d_sae)
        hist.add_codes(self.index[keep], q[keep].astype(np.int32), self.n_rows)
        ptr, hq, count = hist.to_csr()
        return FeatureStats(self.n_rows, hist.active_counts(), ptr, hq, count)

    def codes(self, q: np.ndarray) -> SparseCodes:
        """The codes with quantized values ``q`` (the entries with q >= 1)."""
        keep = q >= 1
        rows = np.repeat(np.arange(self.n_rows), np.diff(self.row_ptr))
        row_ptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=self.n_rows))]).astype(np.int64)
        return SparseCodes(row_ptr, self.index[keep], q[keep].astype(np.int32), self.d_sae)

    def reconstruct(self, weights: np.ndarray, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """x^ of rows [start, stop) when every stored latent is replaced by ``weights`` (its
        dequantized value q·Δ, 0 when dropped, or its exact value)."""
        stop = self.n_rows if stop is None else stop
        a, b = int(self.row_ptr[start]), int(self.row_ptr[stop])
        out = torch.nn.functional.embedding_bag(
            torch.from_numpy(self.index[a:b]).long(), self.W_dec, torch.from_numpy(self.row_ptr[start:stop] - a),
            mode="sum", per_sample_weights=torch.from_numpy(np.ascontiguousarray(weights[a:b], dtype=np.float32)))
        return out + self.b_dec


@dataclass
class Point:
    """One evaluated step: the DL estimate and the loss of what the decoder reconstructs."""

    step: float | np.ndarray
    loss: float
    stats: FeatureStats
    err: ErrorStats

    @property
    def dl_bits_per_row(self) -> float:
        return self.stats.estimate_bits(conditional=False) / max(self.stats.n_rows, 1)

    @property
    def l0(self) -> float:
        return float(self.stats.active.sum()) / max(self.stats.n_rows, 1)


class Evaluator:
    """Loss and DL of an SAE's codes at any step(s), on a cached sample of rows. Built-in
    losses stream over row chunks; a callable loss sees the whole sample at once."""

    CHUNK_ROWS = 16384

    def __init__(self, latents: SparseLatents, metric: Metric = "mse"):
        self.latents = latents
        self.metric, self._fn = resolve_metric(metric)
        self.evaluations = 0

    def loss_of(self, weights: np.ndarray) -> tuple[float, ErrorStats]:
        lat = self.latents
        err = ErrorStats(lat.x.shape[1])
        with torch.no_grad():
            if self._fn is not None:
                x_hat = lat.reconstruct(weights)
                err.add(lat.x, x_hat)
                return float(self._fn(lat.x, x_hat)), err
            for a in range(0, lat.n_rows, self.CHUNK_ROWS):
                b = min(a + self.CHUNK_ROWS, lat.n_rows)
                err.add(lat.x[a:b], lat.reconstruct(weights, a, b))
        return (err.mse if self.metric == "mse" else err.fvu), err

    def evaluate(self, step) -> Point:
        self.evaluations += 1
        q = self.latents.quantize_values(step)
        loss, err = self.loss_of(q * self.latents.entry_steps(step))  # z~ = q·Δ, float32 as decoded
        return Point(step, loss, self.latents.stats(q), err)

    def unquantized_loss(self) -> float:
        """The loss with latents sent exactly: no step can do better (up to noise)."""
        return self.loss_of(self.latents.value)[0]


@dataclass
class Precision:
    """The coarsest step meeting ε (``meets``), or the finest tried when none does."""

    step: float
    point: Point
    meets: bool
    tolerance: float
    unquantized_loss: float
    trace: list[Point] = field(default_factory=list)  # every evaluated step, in order


def effective_precision(ev: Evaluator, tolerance: float, rel_tol: float = 0.01, start: float | None = None) -> Precision:
    """Coarsest global step with loss <= ``tolerance`` on a ×2 grid, refined by bisection until
    the passing and failing steps are within a factor ``1 + rel_tol``."""
    expect(tolerance > 0, f"tolerance must be positive, got {tolerance}")
    v = ev.latents.value
    trace: list[Point] = []

    def at(s: float) -> Point:
        trace.append(ev.evaluate(np.float32(s)))
        return trace[-1]

    def done(p: Point) -> Precision:
        return Precision(float(p.step), p, p.loss <= tolerance, tolerance, loss0, trace)

    loss0 = ev.unquantized_loss()
    if len(v) == 0:  # nothing is ever active: the step is irrelevant
        return done(at(1.0))
    top = 2.5 * float(v.max())  # every value rounds to 0 here and beyond: coarser changes nothing
    floor = float(v.max()) / 2 ** 22  # keeps q well inside the kernel's range
    s0 = min(float(start) if start else float(np.median(v)) / 16, top)
    # the whole grid up to `top`: the loss is not monotone in the step (coarse steps drop small,
    # often spurious latents), so the coarsest passing grid point is only known after all of them
    ups = [s0 * 2.0 ** m for m in range(int(np.ceil(np.log2(top / s0))))] + [top]
    points = [at(s) for s in ups]
    ok = [i for i, p in enumerate(points) if p.loss <= tolerance]
    if ok:
        i = ok[-1]
        if i == len(ups) - 1:  # even sending nothing meets ε
            return done(points[i])
        lo, p_lo, hi = ups[i], points[i], ups[i + 1]
    else:
        lo, p_lo = s0, points[0]
        if loss0 > tolerance:  # finer steps only approach the unquantized loss, which misses ε
            return done(p_lo)
        while p_lo.loss > tolerance and lo / 2 >= floor:
            lo /= 2
            p_lo = at(lo)
        if p_lo.loss > tolerance:
            return done(p_lo)
        hi = 2 * lo
    while hi / lo > 1 + rel_tol:
        mid = float(np.sqrt(lo * hi))
        pm = at(mid)
        if pm.loss <= tolerance:
            lo, p_lo = mid, pm
        else:
            hi = mid
    return done(p_lo)


def rd_curve(ev: Evaluator, steps) -> list[Point]:
    """Rate-distortion points (DL vs loss) at each global step."""
    return [ev.evaluate(np.float32(s)) for s in steps]
