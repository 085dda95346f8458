"""Measure an SAE on an activation dataset: one streaming pass that encodes every row batch,
quantizes the latents with the fused kernel, accumulates the per-feature statistics of the DL
estimate and the error of the quantized reconstruction (DESIGN §2). Memory is bounded by the
batch size and the histograms, never by the number of rows."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import distributed
from ..data.acts import as_activations
from .codes import steps_tensor
from .entropy import FeatureStats, naive_bits_per_row, parent_cooccurrence, value_bits_fixed
from ..budget import rows_for
from ..errors import expect
from .kernels import Histogram, select_quantize
from ..models.sae import SAE
from ..models.tree import validate_parents


@dataclass
class ErrorStats:
    """Streaming sums for MSE and FVU of a reconstruction."""

    d: int
    n: int = 0
    sse: float = 0.0
    sum_x: np.ndarray | None = None
    sum_x2: float = 0.0

    def add(self, x: torch.Tensor, x_hat: torch.Tensor) -> None:
        # float32 products summed in float64: the sums stay exact to ~1e-7 relative, and no
        # float64 copy of the batch is made
        diff = x - x_hat
        self.n += x.shape[0]
        self.sse += float(torch.sum(diff * diff, dtype=torch.float64))
        s = torch.sum(x, dim=0, dtype=torch.float64).cpu().numpy()
        self.sum_x = s if self.sum_x is None else self.sum_x + s
        self.sum_x2 += float(torch.sum(x * x, dtype=torch.float64))

    def summed_over_ranks(self) -> "ErrorStats":
        """The sums of all ranks' rows together (float64: the last digits may differ from one
        process's sums, as a different batching's would)."""
        if not distributed.active():
            return self
        n, sse, sum_x2 = distributed.sum_float([self.n, self.sse, self.sum_x2])
        sum_x = distributed.sum_float(np.zeros(self.d) if self.sum_x is None else self.sum_x)
        return ErrorStats(self.d, int(n), float(sse), sum_x, float(sum_x2))

    @property
    def mse(self) -> float:
        return self.sse / (self.n * self.d) if self.n else 0.0

    @property
    def fvu(self) -> float:
        if not self.n:
            return 0.0
        total_var = self.sum_x2 - float((self.sum_x ** 2).sum()) / self.n
        return self.sse / total_var if total_var > 0 else math.inf


def step_summary(step, d_sae: int) -> float | dict:
    st = steps_tensor(step, d_sae)
    if st.dim() == 0:
        return float(st)
    return {"per_feature": True, "min": float(st.min()), "median": float(st.median()), "max": float(st.max())}


@dataclass
class DLReport:
    """What ``mdlsae dl`` prints. Bits are per row unless named otherwise."""

    n_rows: int
    d_in: int
    d_sae: int
    step: float | dict
    l0: float
    dl_bits_per_row: float  # the DL estimate (conditional on parents when given)
    naive_bits_per_row: float  # L0 * (B + log2 D)
    dense_bits_per_row: float  # d_in * B
    float16_bits_per_row: float  # 16 * d_in
    value_bits: int  # B, fixed-length bits of the largest quantized value
    mse: float
    fvu: float
    dead_fraction: float  # features never active after quantization
    conditional: bool = False
    flat_dl_bits_per_row: float | None = None  # without parents, when parents were given
    sae: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def dl_bits(self) -> float:
        return self.dl_bits_per_row * self.n_rows

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(d.pop("extra"))
        d["dl_bits"] = self.dl_bits
        return d

    def table(self) -> str:
        rows = [
            ("rows", f"{self.n_rows:,}"),
            ("d_in / d_sae", f"{self.d_in} / {self.d_sae}"),
            ("step", f"{self.step:g}" if isinstance(self.step, float) else
             f"per feature (median {self.step['median']:.4g})"),
            ("L0 (after quantization)", f"{self.l0:.3f}"),
            ("dead features", f"{100 * self.dead_fraction:.1f} %"),
            ("MSE", f"{self.mse:.6g}"),
            ("FVU", f"{self.fvu:.5f}"),
            ("DL estimate" + (" (given parents)" if self.conditional else ""),
             f"{self.dl_bits_per_row:.2f} bits/row   ({self.dl_bits / 8 / 1024:.1f} KiB total)"),
        ]
        if self.flat_dl_bits_per_row is not None:
            rows.append(("DL estimate (flat)", f"{self.flat_dl_bits_per_row:.2f} bits/row"))
        if "forest" in self.extra:  # discovered on these rows (--parents auto), or the SAE's own
            fo = self.extra["forest"]
            bits = f", {fo['model_bits']:,} model bits" if "model_bits" in fo else ""
            rows.append((f"forest ({fo.get('source', 'found here')})",
                         f"{fo['edges']:,} children in {fo['trees']:,} trees{bits}"))
        if "downstream" in self.extra:  # the model run with the reconstruction spliced back in (dl --metric)
            ds = self.extra["downstream"]
            ref = ", ".join(f"{k} {ds[k]:.4g}" for k in ("clean_ce", "zero_ablated", "ce_loss_recovered") if k in ds)
            rows.append((f"{ds['metric']} (layer {ds['layer']} {ds['site']}, {ds['tokens']:,} tokens)",
                         f"{ds['loss']:.5g}   (clean model: {ref})"))
        rows += [
            (f"naive L0*(B+log2 D), B={self.value_bits}", f"{self.naive_bits_per_row:.2f} bits/row"),
            ("dense d*B", f"{self.dense_bits_per_row:.0f} bits/row"),
            ("raw float16", f"{self.float16_bits_per_row:.0f} bits/row"),
        ]
        w = max(len(r[0]) for r in rows)
        return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


def scan(acts, sae: SAE, step, parents=None, batch_rows: int | None = None,
         progress: bool = False, on_codes=None, rows: tuple[int, int] | None = None,
         error: bool = True) -> tuple[FeatureStats, ErrorStats]:
    """One pass over ``acts``: per-feature statistics of the quantized codes and the error of
    their reconstruction (left empty with ``error=False``: a caller that only codes saves the
    decoder pass, ~5 % of encode). ``on_codes(codes)`` sees every batch's codes, in row order. Batches
    hold ``batch_rows`` rows, by default as many as the memory budget allows (mdlsae.budget).
    ``parents`` defaults to the SAE's own forest (a tree SAE's), if it has one, whose siblings
    are then coded as exclusive (FeatureStats.exclusive). An SAE on a CUDA
    device encodes there: each batch goes to the device once, the GEMM and the fused select
    kernel run there and only its compact codes and histogram counts come back.

    Under torch.distributed each rank reads only its share of the rows, ``rows`` (by default
    :func:`mdlsae.distributed.share`'s; the ranks' ``rows`` must tile the dataset in rank
    order) and ``on_codes`` sees that share's codes; the statistics returned are those of all
    rows, on every rank."""
    acts = as_activations(acts)
    expect(acts.d == sae.d_in, f"{acts.name}: activations have d_in={acts.d} but the SAE expects d_in={sae.d_in}")
    batch_rows = rows_for(sae.row_bytes()) if batch_rows is None else batch_rows
    expect(batch_rows > 0, f"batch_rows must be positive, got {batch_rows}")
    steps_tensor(step, sae.d_sae)  # validate before the first batch
    k, threshold, tree = sae.selection()
    parents = tree if parents is None else validate_parents(parents, sae.d_sae)
    hist = Histogram(sae.d_sae)
    err = ErrorStats(sae.d_in)
    with_parent = np.zeros(sae.d_sae, dtype=np.int64)
    start, stop = distributed.share(acts.n_rows) if rows is None else rows
    bar = tqdm(total=stop - start, unit="row", unit_scale=True, disable=not (progress and distributed.is_main()),
               desc="measure" if distributed.world() == 1 else f"measure (rank 0 of {distributed.world()})")
    buf = None  # the first batch's GEMM output, reused by every later (never larger) batch
    with torch.no_grad(), distributed.agreed("the measuring pass"):
        for x in acts.batches(batch_rows, start, stop):
            x = x.to(sae.W_enc.device, non_blocking=True)
            gemm, bias = sae.encoder_parts(x, None if buf is None else buf[:x.shape[0]])
            buf = gemm if buf is None else buf
            codes = select_quantize(gemm, k=k, threshold=threshold, step=step, hist=hist, bias=bias, parents=tree)
            if error:
                err.add(x, codes.reconstruct(step, sae.W_dec, sae.b_dec))
            if parents is not None:
                with_parent += parent_cooccurrence(codes, parents)
            if on_codes is not None:
                on_codes(codes)
            bar.update(x.shape[0])
    bar.close()
    ptr, q, count = hist.to_csr()
    # a strict tree SAE's own forest: its rule lets at most one child of a parent fire in a row
    exclusive = tree is not None and np.array_equal(parents, tree)
    stats = FeatureStats(stop - start, hist.active_counts(), ptr, q, count, parents,
                         with_parent if parents is not None else None, exclusive)
    return stats.summed_over_ranks(), err.summed_over_ranks()


def report(stats: FeatureStats, err: ErrorStats, step, d_in: int, sae_name: str | None = None) -> DLReport:
    n = max(stats.n_rows, 1)
    l0 = float(stats.active.sum()) / n
    b = value_bits_fixed(stats.max_q())
    conditional = stats.parents is not None
    return DLReport(
        n_rows=stats.n_rows, d_in=d_in, d_sae=stats.d_sae, step=step_summary(step, stats.d_sae), l0=l0,
        dl_bits_per_row=stats.estimate_bits(conditional=True) / n,
        naive_bits_per_row=naive_bits_per_row(l0, stats.d_sae, stats.max_q()),
        dense_bits_per_row=float(d_in * b), float16_bits_per_row=float(16 * d_in), value_bits=b,
        mse=err.mse, fvu=err.fvu, dead_fraction=float((stats.active == 0).mean()),
        conditional=conditional,
        flat_dl_bits_per_row=stats.estimate_bits(conditional=False) / n if conditional else None,
        sae=sae_name)


def measure_dl(acts, sae: SAE, step, parents=None, batch_rows: int | None = None,
               progress: bool = False, sae_name: str | None = None) -> DLReport:
    """Description length of ``sae``'s quantized codes of ``acts`` (DESIGN §2).

    >>> from mdlsae.models.sae import SAE, SAEConfig
    >>> sae = SAE.random(SAEConfig("topk", d_in=16, d_sae=64, k=4), seed=0)
    >>> r = measure_dl(torch.randn(1000, 16), sae, step=0.1)
    >>> r.n_rows, r.l0 <= 4, r.dl_bits_per_row < r.naive_bits_per_row
    (1000, True, True)
    """
    acts = as_activations(acts)
    stats, err = scan(acts, sae, step, parents, batch_rows, progress)
    return report(stats, err, step, acts.d, sae_name)
