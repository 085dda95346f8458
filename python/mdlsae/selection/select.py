"""MDL model selection (seed 002 §6): among candidate SAEs, the one that describes the data in
the fewest bits while its reconstruction loss stays within the tolerance ε.

Each candidate is evaluated at its effective precision (the coarsest global step meeting ε,
:mod:`mdlsae.precision`), optionally with per-feature steps (:mod:`mdlsae.allocate`), and
reported with its two-part DL (:mod:`mdlsae.twopart`). Every candidate sees the same rows: the
first ``max_rows`` of the dataset (all by default), which is what a held-out test set means
here. The criterion is the data bits per row (the write-up's large-N measure) or the two-part
total at this N.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from .allocate import Allocation, allocate_steps
from ..errors import expect
from ..measure.dl import DLReport, report
from .._native import _C
from ..measure.forest import forest_given, forest_of_codes
from .precision import (METRICS, Evaluator, Metric, Point, Precision, SparseLatents, effective_precision, rd_curve,
                        resolve_metric)
from ..models.sae import SAE
from ..measure.twopart import AMORTISATION_ROWS, TwoPartDL

CRITERIA = ("data", "total")
RD_EXPONENTS = np.arange(-8, 9) / 2  # rate-distortion curve: Δ_g · 2^e, from Δ_g/16 to 16·Δ_g


@dataclass
class Candidate:
    """One SAE evaluated at ε."""

    name: str
    sae_cfg: dict
    report: DLReport  # at the chosen step(s), on the evaluated rows
    loss: float
    meets: bool
    precision: Precision  # the global-step search
    allocation: Allocation | None  # per-feature steps, when asked for
    two_part: TwoPartDL
    rd: list[dict] = field(default_factory=list)  # {"step", "loss", "dl_bits_per_row", "l0"}
    forest: dict | None = None  # the candidate's own parent forest (parents="auto"): its summary

    @property
    def step(self) -> float | np.ndarray:
        if self.allocation is not None and not self.allocation.fallback:
            return self.allocation.steps
        return self.precision.step

    @property
    def final_point(self) -> Point:
        """The evaluation behind the report: per-feature steps when allocated, else the global step."""
        return self.allocation.point if self.allocation is not None else self.precision.point

    @property
    def dl_bits_per_row(self) -> float:
        return self.report.dl_bits_per_row

    def criterion(self, name: str) -> float:
        return self.dl_bits_per_row if name == "data" else self.two_part.total_bits_per_row

    def to_dict(self) -> dict:
        r = self.report
        out = {
            "sae": self.name, **self.sae_cfg, "n_rows": r.n_rows,
            "dl_bits_per_row": r.dl_bits_per_row, "loss": self.loss, "meets_tolerance": self.meets,
            "step": r.step, "l0": r.l0, "mse": r.mse, "fvu": r.fvu,
            "unquantized_loss": self.precision.unquantized_loss,
            "naive_bits_per_row": r.naive_bits_per_row, "dead_fraction": r.dead_fraction,
            "model_bits": self.two_part.model_bits,
            "total_bits_per_row": self.two_part.total_bits_per_row,
            "two_part": self.two_part.to_dict(),
            "evaluations": len(self.precision.trace) + (self.allocation.evaluations if self.allocation else 0),
        }
        if self.allocation is not None:
            a = self.allocation
            out["per_feature"] = {"global_step": self.precision.step,
                                  "global_dl_bits_per_row": a.global_point.dl_bits_per_row,
                                  "global_loss": a.global_point.loss, "saving": a.saving,
                                  "fallback": a.fallback}
        if self.rd:
            out["rd_curve"] = self.rd
        if self.forest is not None:
            out["forest"] = self.forest
            out["flat_dl_bits_per_row"] = r.flat_dl_bits_per_row
        return out


def evaluate_sae(acts, sae: SAE, tolerance: float, metric: Metric = "mse", per_feature: bool = False,
                 max_rows: int | None = None, decoder_precision: int = 16, name: str | None = None,
                 rd: bool = False, progress: bool = False, parents: str | None = None) -> Candidate:
    """Effective precision of ``sae`` at ``tolerance`` (and per-feature steps, and the
    rate-distortion curve around it, when asked) on the first ``max_rows`` rows of ``acts``.
    ``parents="auto"``: the DL is conditional on the candidate's own forest, found on its codes
    at the chosen step(s) (measure.forest), and the two-part total pays for that forest; a tree
    SAE is measured with the forest it carries, paid for the same way. The step search itself
    stays flat: a forest changes the bits, not the loss."""
    expect(parents in (None, "auto"), f"parents must be None or 'auto' when selecting SAEs, got {parents!r}")
    name = name or f"{sae.cfg.architecture} D={sae.d_sae}"
    ev = Evaluator(SparseLatents.from_sae(acts, sae, max_rows=max_rows, progress=progress), metric)
    prec = effective_precision(ev, tolerance)
    alloc = allocate_steps(ev, prec) if per_feature else None
    final = alloc.point if alloc is not None else prec.point
    stats, forest = final.stats, None
    if parents == "auto" or sae.cfg.parents is not None:  # found on the codes, or the tree SAE's own
        codes = ev.latents.codes(ev.latents.quantize_values(final.step))
        forest = forest_of_codes(codes) if parents == "auto" else forest_given(codes, sae.cfg.parents)
        stats = dataclasses.replace(stats, parents=forest.parents, active_with_parent=forest.both,
                                    exclusive=parents != "auto")  # a strict tree's own siblings never co-fire
    rep = report(stats, final.err, final.step, sae.d_in, name)
    two = TwoPartDL.of(stats, sae.d_in, alloc is not None and not alloc.fallback, decoder_precision,
                       forest.model_bits if forest is not None else 0)
    curve = []
    if rd:
        curve = [{"step": float(p.step), "loss": p.loss, "dl_bits_per_row": p.dl_bits_per_row, "l0": p.l0}
                 for p in rd_curve(ev, prec.step * 2.0 ** RD_EXPONENTS)]
    cfg = {"architecture": sae.cfg.architecture, "d_in": sae.d_in, "d_sae": sae.d_sae, "k": sae.cfg.k}
    return Candidate(name, cfg, rep, final.loss, final.loss <= tolerance, prec, alloc, two, curve,
                     forest.summary() if forest is not None else None)


@dataclass
class Selection:
    tolerance: float
    metric: str
    criterion: str
    candidates: list[Candidate]
    reference: dict | None = None  # a downstream metric's clean-model figures (measure.downstream)

    @property
    def chosen(self) -> Candidate | None:
        ok = [c for c in self.candidates if c.meets]
        return min(ok, key=lambda c: c.criterion(self.criterion), default=None)

    def to_dict(self) -> dict:
        c = self.chosen
        out = {"tolerance": self.tolerance, "metric": self.metric, "criterion": self.criterion,
               "chosen": c.name if c else None, "candidates": [x.to_dict() for x in self.candidates]}
        if self.reference is not None:
            out["reference"] = self.reference
        return out

    def table(self) -> str:
        n = self.candidates[0].report.n_rows if self.candidates else 0
        per_feature = any(c.allocation is not None for c in self.candidates)
        forests = any(c.forest is not None for c in self.candidates)
        fvu = self.metric not in METRICS  # a downstream loss: the FVU beside it
        head = (f"{'SAE':<24} {'D':>6} {'k':>4} {'L0':>6} {'step':>9} {self.metric:>9} {'ok':>3} "
                + (f"{'FVU':>7} " if fvu else "") +
                f"{'DL b/row':>9} {'model bits':>11} {'total b/row':>11}" + (f" {'saving':>7}" if per_feature else "")
                + (f" {'flat DL':>9} {'edges':>6}" if forests else ""))
        lines = [f"tolerance {self.metric} <= {self.tolerance:g} on {n:,} rows; chosen by "
                 f"{'data bits (large-N DL)' if self.criterion == 'data' else 'two-part total at this N'}",
                 head, "-" * len(head)]
        if self.reference is not None:
            lines.insert(1, "clean model: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                                        for k, v in self.reference.items()))
        chosen = self.chosen
        for c in self.candidates:
            st = c.report.step
            st = f"{st:.4g}" if isinstance(st, float) else f"~{st['median']:.3g}"
            mark = "*" if c is chosen else " "
            line = (f"{mark}{c.name[-23:]:<23} {c.report.d_sae:>6} {c.sae_cfg['k'] or '-':>4} {c.report.l0:>6.2f} "
                    f"{st:>9} {c.loss:>9.4g} {'yes' if c.meets else 'no':>3} "
                    + (f"{c.report.fvu:>7.4f} " if fvu else "") + f"{c.dl_bits_per_row:>9.2f} "
                    f"{c.two_part.model_bits:>11,} {c.two_part.total_bits_per_row:>11.2f}")
            if per_feature:
                line += f" {100 * c.allocation.saving:>6.1f}%" if c.allocation else f" {'-':>7}"
            if forests:
                line += f" {c.report.flat_dl_bits_per_row:>9.2f} {c.forest['edges']:>6,}"
            lines.append(line)
        if chosen is None:
            lines.append("no candidate meets the tolerance")
        else:
            lines.append(f"chosen: {chosen.name}  ({chosen.dl_bits_per_row:.2f} data bits/row, "
                         f"{chosen.two_part.total_bits_per_row:.2f} two-part bits/row)")
            at = "  ".join(f"N=1e{int(np.log10(m))}: {chosen.two_part.bits_per_row_at(m):.1f}"
                           for m in AMORTISATION_ROWS[::2])
            lines.append(f"two-part bits/row of the chosen SAE as N grows: {at}")
        return "\n".join(lines)


def select_sae(acts, saes: list[str | os.PathLike] | list[tuple[str, SAE]], tolerance: float,
               metric: Metric = "mse", per_feature: bool = False, criterion: str = "data",
               max_rows: int | None = None, decoder_precision: int = 16, progress: bool = False,
               parents: str | None = None, device: str | None = None) -> Selection:
    """Evaluate every candidate (SAE directories, or ``(name, SAE)`` pairs) at ``tolerance``
    and choose the one with the smallest DL among those meeting it (each with its own forest
    for ``parents="auto"``). ``device`` (e.g. "cuda"): where each SAE's encoder runs."""
    expect(criterion in CRITERIA, f"criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}")
    expect(len(saes) > 0, "no candidate SAEs given")
    expect(tolerance > 0, f"tolerance must be positive, got {tolerance}")
    cands = []
    for item in tqdm(saes, desc="select", unit="sae", disable=not progress):
        name, sae = (item if isinstance(item, tuple) else (str(item), SAE.load(item)))
        if device is not None:
            sae = sae.to(device)
        cands.append(evaluate_sae(acts, sae, tolerance, metric, per_feature, max_rows, decoder_precision, name,
                                  progress=False, parents=parents))
        del sae
        _C.trim_memory()  # else each SAE's freed latents stay in the process (glibc fragmentation)
    return Selection(tolerance, resolve_metric(metric)[0], criterion, cands, getattr(metric, "reference", None))
