"""A grid of SAEs (widths × k × architecture) trained on one dataset and measured at one
tolerance ε on held-out rows (seed 002 §6): the results table (JSON + CSV) and the plots that
answer the write-up's questions — where the DL bottoms out as the width grows (the "bounce"),
whether the rate-distortion curves of different SAEs cross (seed 000), how the two-part DL
depends on N, and how the L0/MSE frontier tells a different story.

SAEs are saved under ``OUT/saes/<name>`` and reused on a re-run when their recorded training
settings match, so a long sweep can be resumed or extended.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.acts import as_activations
from ..errors import expect
from ..fileio import atomic_file
from ..models.sae import SAE
from .._native import _C
from ..selection.select import evaluate_sae
from ..models.train import TrainConfig, train_sae

CSV_COLUMNS = ("sae", "architecture", "d_sae", "k", "n_rows", "l0", "unquantized_loss", "step", "loss",
               "meets_tolerance", "dl_bits_per_row", "global_dl_bits_per_row", "per_feature_saving",
               "naive_bits_per_row", "dead_fraction", "model_bits", "total_bits_per_row")


@dataclass
class SweepConfig:
    widths: list[int]
    ks: list[int]
    tolerance: float
    architectures: list[str] = field(default_factory=lambda: ["topk"])
    metric: str = "mse"
    epochs: int = 10
    seed: int = 0
    per_feature: bool = False
    max_rows: int | None = None
    decoder_precision: int = 16
    parents: str | None = None  # "auto": each SAE measured with its own parent forest

    def __post_init__(self) -> None:
        expect(self.widths and self.ks and self.architectures, "a sweep needs at least one width, k and architecture")
        expect(all(w > 0 for w in self.widths) and all(k > 0 for k in self.ks), "widths and k must be positive")
        expect(self.tolerance > 0, f"tolerance must be positive, got {self.tolerance}")


def sae_name(arch: str, width: int, k: int) -> str:
    return f"{arch}_D{width}_k{k}"


def _trained(train, arch: str, width: int, k: int, cfg: SweepConfig, path: Path, progress: bool) -> SAE:
    """The SAE at ``path`` if it was trained with these settings, else a freshly trained one."""
    record = {"architecture": arch, "d_sae": width, "k": k, "epochs": cfg.epochs, "seed": cfg.seed,
              "train_rows": train.n_rows}
    if (path / "cfg.json").is_file():
        sae = SAE.load(path)
        if sae.cfg.extra.get("mdlsae_train") == record:
            return sae
    sae = train_sae(train, TrainConfig(architecture=arch, d_sae=width, k=k, epochs=cfg.epochs, seed=cfg.seed),
                    progress=progress)
    sae.cfg.extra["mdlsae_train"] = record
    sae.save(path)
    return sae


def rd_envelope(curve: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(loss, DL) of the lower envelope: the fewest bits that reach each loss or less."""
    pts = sorted((p["loss"], p["dl_bits_per_row"]) for p in curve)
    loss = np.array([p[0] for p in pts])
    return loss, np.minimum.accumulate(np.array([p[1] for p in pts]))


def rd_crossings(cands: list[dict], points: int = 200, margin: float = 0.02) -> list[dict]:
    """Pairs of SAEs whose rate-distortion curves cross on their common loss range: each is
    cheaper somewhere by more than ``margin`` (relative, and at least 0.05 bits/row, so that
    curves running together count as ties), with the losses where the cheaper one changes."""
    out = []
    for a, b in itertools.combinations([c for c in cands if c.get("rd_curve")], 2):
        (la, da), (lb, db) = rd_envelope(a["rd_curve"]), rd_envelope(b["rd_curve"])
        lo, hi = max(la[0], lb[0]), min(la[-1], lb[-1])
        if not (0 < lo < hi):
            continue
        grid = np.log(np.geomspace(lo, hi, points))
        fa, fb = np.interp(grid, np.log(la), da), np.interp(grid, np.log(lb), db)
        diff = fa - fb
        clear = np.flatnonzero(np.abs(diff) > np.maximum(margin * np.minimum(fa, fb), 0.05))
        flips = clear[1:][np.sign(diff[clear[1:]]) != np.sign(diff[clear[:-1]])]
        if len(flips):
            out.append({"a": a["sae"], "b": b["sae"], "at_loss": [float(np.exp(grid[i])) for i in flips]})
    return out


def best_per_width(cands: list[dict], key: str = "dl_bits_per_row") -> list[dict]:
    """For each (architecture, width), the candidate meeting ε with the smallest ``key``."""
    best: dict[tuple, dict] = {}
    for c in cands:
        if c["meets_tolerance"]:
            g = (c["architecture"], c["d_sae"])
            if g not in best or c[key] < best[g][key]:
                best[g] = c
    return [best[g] for g in sorted(best)]


def feature_picks(best: list[dict], chosen: dict) -> list[tuple[str, dict]]:
    """The SAEs whose features are drawn (seed 002 §6's regimes): the narrowest SAE meeting ε,
    the MDL optimum and the widest meeting ε, in order of width; an SAE that is two of these
    is drawn once under both labels. ``best`` is :func:`best_per_width` (sorted by architecture
    first, so its ends are not the narrowest and widest when several architectures are swept)."""
    by_width = sorted(best, key=lambda c: (c["d_sae"], c["dl_bits_per_row"]))
    picks = [("narrowest", by_width[0]), ("MDL-optimal", chosen), ("widest", by_width[-1])] if by_width else \
        [("MDL-optimal", chosen)]
    out: list[tuple[str, dict]] = []
    for label, c in picks:
        same = next((i for i, (_, o) in enumerate(out) if o["sae"] == c["sae"]), None)
        if same is None:
            out.append((label, c))
        else:
            out[same] = (f"{out[same][0]} = {label}", c)
    return out


def csv_row(c: dict) -> dict:
    pf = c.get("per_feature") or {}
    row = {k: c.get(k) for k in CSV_COLUMNS}
    row["step"] = pf.get("global_step", c["step"]) if isinstance(c["step"], dict) else c["step"]
    row["global_dl_bits_per_row"] = pf.get("global_dl_bits_per_row", c["dl_bits_per_row"])
    row["per_feature_saving"] = pf.get("saving", 0.0)
    return row


def run_sweep(train, evaluate, cfg: SweepConfig, out_dir: str | Path, image_shape: tuple[int, int] | None = None,
              dataset: str = "", progress: bool = False, metric=None) -> dict:
    """Train (or reuse) every SAE of the grid on ``train``, evaluate each on ``evaluate`` at
    ``cfg.tolerance``, write ``results.json``, ``results.csv`` and the plots into ``out_dir``.
    ``metric``: a loss callable named ``cfg.metric`` (e.g. a measure.downstream loss) to use instead."""
    from . import plots  # matplotlib only when plotting

    train, evaluate = as_activations(train), as_activations(evaluate)
    expect(train.d == evaluate.d, f"train rows have d={train.d} but evaluation rows have d={evaluate.d}")
    out = Path(out_dir)
    grid = list(itertools.product(cfg.architectures, sorted(cfg.widths), sorted(cfg.ks)))
    cands: list[dict] = []
    usage: dict[str, np.ndarray] = {}  # per-feature active counts, for the feature grids
    for arch, width, k in tqdm(grid, desc="sweep", unit="sae", disable=not progress):
        if arch == "topk" and k > width:
            continue
        name = sae_name(arch, width, k)
        sae = _trained(train, arch, width, k, cfg, out / "saes" / name, progress)
        cand = evaluate_sae(evaluate, sae, cfg.tolerance, metric or cfg.metric, cfg.per_feature, cfg.max_rows,
                            cfg.decoder_precision, name, rd=True, parents=cfg.parents)
        cands.append(cand.to_dict())
        usage[name] = cand.final_point.stats.active
        del sae, cand
        _C.trim_memory()  # each SAE's freed buffers back to the system (see select_sae)
    best = best_per_width(cands)
    ok = [c for c in cands if c["meets_tolerance"]]
    chosen = min(ok, key=lambda c: c["dl_bits_per_row"], default=None)
    crossings = rd_crossings(cands)
    results = {
        "dataset": dataset, "date": date.today().isoformat(), "config": asdict(cfg),
        "train_rows": train.n_rows, "eval_rows": cands[0]["n_rows"] if cands else 0,
        "chosen": chosen["sae"] if chosen else None,
        "best_per_width": [{"sae": c["sae"], "d_sae": c["d_sae"], "k": c["k"], "dl_bits_per_row": c["dl_bits_per_row"],
                            "total_bits_per_row": c["total_bits_per_row"]} for c in best],
        "rd_crossings": {"pairs": len(cands) * (len(cands) - 1) // 2, "crossing": len(crossings),
                         "examples": crossings[:50]},
        "candidates": cands,
    }
    if getattr(metric, "reference", None) is not None:
        results["reference"] = metric.reference
    with atomic_file(out / "results.json") as f:
        f.write(json.dumps(results, indent=1, default=float).encode())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS)
    w.writeheader()
    w.writerows(csv_row(c) for c in cands)
    with atomic_file(out / "results.csv") as f:
        f.write(buf.getvalue().encode())
    plots.dl_vs_width(cands, out / "dl_vs_width.png", cfg.tolerance, cfg.metric, dataset)
    plots.rd_curves(cands, out / "rd_curves.png", cfg.tolerance, cfg.metric, dataset)
    plots.l0_frontier(cands, out / "l0_frontier.png", cfg.tolerance, cfg.metric, dataset)
    plots.amortisation(best, out / "amortisation.png", dataset)
    if image_shape is not None and chosen is not None:
        panels = [(f"{label}: {c['sae']}  ({c['dl_bits_per_row']:.0f} bits/row)",
                   SAE.load(out / "saes" / c["sae"]).W_dec.detach().numpy(), usage[c["sae"]])
                  for label, c in feature_picks(best, chosen)]
        plots.feature_grids(panels, image_shape, out / "features.png")
    return results
