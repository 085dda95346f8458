"""The PNG figures of model selection: DL vs width (the "bounce"), rate–distortion curves,
the L0/loss frontier for contrast, two-part bits vs N, decoder features as images, and the
feature-splitting phase diagram. Inputs are the plain dicts of ``results.json`` so a figure can
be redrawn from a saved table. matplotlib is imported here only (headless Agg backend)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..fileio import atomic_file  # noqa: E402
from ..measure.twopart import AMORTISATION_ROWS  # noqa: E402


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def _by(cands: list[dict], key: str) -> dict:
    out: dict = {}
    for c in cands:
        out.setdefault(c[key], []).append(c)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] is None, kv[0])))


def _colors(values) -> dict:
    values = list(values)
    cmap = plt.get_cmap("viridis")
    return {v: cmap(i / max(len(values) - 1, 1)) for i, v in enumerate(values)}


def _global_dl(c: dict) -> float:
    return (c.get("per_feature") or {}).get("global_dl_bits_per_row", c["dl_bits_per_row"])


def dl_vs_width(cands: list[dict], path: Path, tolerance: float, metric: str, title: str = "") -> None:
    """Left: data bits per row vs width, one line per k, for the SAEs meeting ε (a DL at a
    loss above ε is not comparable); the per-width best and the MDL optimum highlighted.
    Right: the per-width best's two-part bits at several N."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    ok = [c for c in cands if c["meets_tolerance"]]
    ks = _by(ok, "k")
    col = _colors(ks)
    for k, cs in ks.items():
        cs = sorted(cs, key=lambda c: c["d_sae"])
        ax.plot([c["d_sae"] for c in cs], [_global_dl(c) for c in cs], "o-", color=col[k], alpha=0.7, lw=1,
                label=f"k={k}")
    best: dict = {}
    for c in ok:
        if c["d_sae"] not in best or _global_dl(c) < _global_dl(best[c["d_sae"]]):
            best[c["d_sae"]] = c
    if best:
        ws = sorted(best)
        ax.plot(ws, [_global_dl(best[w]) for w in ws], "k-", lw=2.2, label=f"best meeting {metric}≤{tolerance:g}")
        if any(c.get("per_feature") for c in ok):
            pf = {w: min(c["dl_bits_per_row"] for c in ok if c["d_sae"] == w) for w in ws}
            ax.plot(ws, [pf[w] for w in ws], "k--", lw=1.5, label="best, per-feature steps")
        opt = min(ok, key=lambda c: c["dl_bits_per_row"])  # the sweep's choice (per-feature steps if allocated)
        ax.plot(opt["d_sae"], opt["dl_bits_per_row"], "*", ms=18, color="red", mec="k", label=f"MDL optimum {opt['sae']}")
        n = opt["n_rows"]
        for m, style in ((n, "-"), (10 ** 6, "--"), (10 ** 8, ":")):
            ax2.plot(ws, [best[w]["two_part"]["data_bits_per_row"] + best[w]["model_bits"] / m for w in ws],
                     "k" + style, marker="o", label=f"two-part, N={m:,}")
        ax2.plot(ws, [best[w]["two_part"]["data_bits_per_row"] for w in ws], "r-", marker="s", label="data bits only (N→∞)")
    missing = sorted({c["k"] for c in cands if c["k"] is not None} - set(ks))
    if missing:
        ax.plot([], [], " ", label=f"k={', '.join(map(str, missing))}: no SAE meets ε")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.set_xlabel("SAE width D")
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    ax.set_ylabel("DL at effective precision (bits/row)")
    ax.set_title(f"{title}: DL vs width, SAEs meeting {metric} ≤ {tolerance:g} "
                 f"({len(cands) - len(ok)} of {len(cands)} miss it)", fontsize=9)
    ax2.set_yscale("log")
    ax2.set_ylabel("bits/row")
    ax2.set_title("two-part DL of the per-width best (decoder + tables amortised over N)", fontsize=9)
    _save(fig, path)


def _log_loss_axis(ax) -> None:
    """Log x axis with a few plain labels (1, 2, 5 per decade) instead of crowded minor ones."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def rd_curves(cands: list[dict], path: Path, tolerance: float, metric: str, title: str = "") -> None:
    """DL vs loss as the global step varies. First panel: the per-width best SAEs meeting ε
    (the ones MDL chooses between: if their curves cross, the choice depends on ε); then one
    panel per k, colour by width. Zoomed on the losses around ε: the fine-step ends of the
    curves, where the DL shoots up for no loss gain, are cut off."""
    with_curve = [c for c in cands if c.get("rd_curve")]
    ks = _by(with_curve, "k")
    if not ks:
        return
    best: dict = {}
    for c in with_curve:
        if c["meets_tolerance"] and (c["d_sae"] not in best or c["dl_bits_per_row"] < best[c["d_sae"]]["dl_bits_per_row"]):
            best[c["d_sae"]] = c
    panels = ([("per-width best meeting ε", [best[w] for w in sorted(best)], True)] if best else []) + \
        [(f"k={k}", cs, False) for k, cs in ks.items()]
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.8 * ncols, 3.9 * nrows), squeeze=False, sharey=True)
    col = _colors(sorted({c["d_sae"] for c in cands}))
    at_eps = [c["dl_bits_per_row"] for c in with_curve if c["meets_tolerance"]] or \
        [c["dl_bits_per_row"] for c in with_curve]
    ymax = 1.8 * max(at_eps)
    lmin = min(p["loss"] for c in with_curve for p in c["rd_curve"])
    xlim = (0.9 * min(lmin, tolerance), 4 * tolerance)
    for ax, (name, cs, label_k) in zip(axes.flat, panels):
        for c in sorted(cs, key=lambda c: c["d_sae"]):
            pts = sorted((p["loss"], p["dl_bits_per_row"]) for p in c["rd_curve"])
            label = f"D={c['d_sae']}" + (f", k={c['k']}" if label_k else "") + ("" if c["meets_tolerance"] else " (misses ε)")
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-", color=col[c["d_sae"]], label=label,
                    lw=2 if label_k else 1.3, alpha=1 if c["meets_tolerance"] else 0.55)
            if c["meets_tolerance"]:
                ax.plot(c["loss"], c["dl_bits_per_row"], "o", color=col[c["d_sae"]], mec="k", ms=5)
        ax.axvline(tolerance, color="r", ls="--", lw=1)
        _log_loss_axis(ax)
        ax.set_xlim(*xlim)
        ax.set_ylim(0, ymax)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"{metric} of the quantized reconstruction", fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5, loc="upper right")
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    for row in axes:
        row[0].set_ylabel("DL (bits/row)")
    fig.suptitle(f"{title}: rate–distortion curves, one global step from Δ/16 to 16Δ (Δ: effective precision; "
                 f"dot: at Δ, possibly per-feature steps; red line: ε = {tolerance:g})", fontsize=9)
    _save(fig, path)


def l0_frontier(cands: list[dict], path: Path, tolerance: float, metric: str, title: str = "") -> None:
    """Unquantized loss vs L0, one line per width: the usual frontier keeps rewarding width."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ws = _by(cands, "d_sae")
    col = _colors(ws)
    for w, cs in ws.items():
        cs = sorted(cs, key=lambda c: c["l0"])
        ax.plot([c["l0"] for c in cs], [c["unquantized_loss"] for c in cs], "o-", color=col[w], label=f"D={w}")
    ax.axhline(tolerance, color="r", ls="--", lw=1, label="ε")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("L0 (active features per row)")
    ax.set_ylabel(f"{metric} (unquantized latents)")
    ax.set_title(f"{title}: L0/{metric} frontier", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def amortisation(best: list[dict], path: Path, title: str = "") -> None:
    """Two-part bits per row vs N for the per-width best SAEs: which width wins depends on N."""
    if not best:
        return
    fig, ax = plt.subplots(figsize=(6, 4.5))
    col = _colors([c["d_sae"] for c in best])
    ns = np.geomspace(AMORTISATION_ROWS[0], AMORTISATION_ROWS[-1], 50)
    for c in best:
        ax.plot(ns, c["two_part"]["data_bits_per_row"] + c["model_bits"] / ns, color=col[c["d_sae"]],
                label=f"{c['sae']}")
    ax.axvline(best[0]["n_rows"], color="gray", ls=":", lw=1, label="evaluated N")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("rows N")
    ax.set_ylabel("two-part bits/row (data + model/N)")
    ax.set_title(f"{title}: N-dependence of the two-part DL", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def feature_grids(panels: list[tuple[str, np.ndarray, np.ndarray]], image_shape: tuple[int, int], path: Path,
                  n: int = 64) -> None:
    """For each (title, W_dec [D, d], active counts [D]): the ``n`` most used decoder rows as
    images, each scaled to its own largest magnitude (red positive, blue negative)."""
    cols = int(np.ceil(np.sqrt(n)))
    fig = plt.figure(figsize=(4.2 * len(panels), 4.6))
    outer = fig.add_gridspec(1, len(panels), wspace=0.08)
    for p, (name, W, active) in enumerate(panels):
        order = np.argsort(-np.asarray(active), kind="stable")[:n]
        inner = outer[p].subgridspec(cols, cols, wspace=0.04, hspace=0.04)
        for i in range(cols * cols):
            ax = fig.add_subplot(inner[i // cols, i % cols])
            ax.set_axis_off()
            if i < len(order):
                img = W[order[i]].reshape(image_shape)
                m = float(np.abs(img).max()) or 1.0
                ax.imshow(img, cmap="RdBu_r", vmin=-m, vmax=m)
            if i == cols // 2:
                ax.set_title(name, fontsize=8)
    with atomic_file(path) as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def phase_diagram(p: np.ndarray, rho: np.ndarray, gain: np.ndarray, path: Path, checks: list[dict] | None = None,
                  title: str = "feature splitting: does the composite A∧B shorten the DL?",
                  rho_min: float = -0.4) -> None:
    """The fraction of the DL saved by adding the composite A∧B over (p, ρ); positive: the
    composite feature pays. Infeasible (p, ρ) (NaN in ``gain``) are hatched grey; the black line
    is the break-even. ``checks`` are measured points {p, rho, gain[, agrees][, decisive]} marked
    on top: ● the measurement says split, ✕ it says don't, ringed red where it disagrees with the
    law (grey ring: the law's gain there is within sampling noise)."""
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    fig, ax = plt.subplots(figsize=(7.6, 5.6))
    keep = rho >= rho_min
    rho, gain = rho[keep], gain[keep]
    lo, hi = float(np.nanmin(gain)), float(np.nanmax(gain))
    norm = TwoSlopeNorm(vcenter=0.0, vmin=min(lo, -1e-3), vmax=max(hi, 1e-3))
    ax.set_facecolor("0.85")  # infeasible: no joint law of two booleans has this (p, ρ)
    ax.fill_between([p[0], p[-1]], rho_min, 1, hatch="///", facecolor="none", edgecolor="0.6", lw=0)
    mesh = ax.pcolormesh(p, rho, gain, cmap="RdBu_r", norm=norm, shading="auto")
    ax.contour(p, rho, np.nan_to_num(gain, nan=-1.0), levels=[0], colors="k", linewidths=1.8)
    cb = fig.colorbar(mesh, ax=ax)
    cb.set_label("(DL without A∧B − DL with A∧B) / DL without\n> 0 (red): splitting pays;  < 0 (blue): it does not")
    handles = [Line2D([], [], color="k", lw=1.8, label="break-even (analytic: equal DL)"),
               Patch(facecolor="0.85", hatch="///", edgecolor="0.6", label="infeasible (p, ρ)")]
    if checks:
        for c in checks:
            ax.plot(c["p"], c["rho"], "o" if c["gain"] > 0 else "x", color="k", ms=6, mew=1.6)
            if not c.get("agrees", True):
                ring = "tab:red" if c.get("decisive", True) else "0.45"
                ax.plot(c["p"], c["rho"], "o", mfc="none", mec=ring, ms=13, mew=1.8)
        handles += [Line2D([], [], ls="", marker="o", color="k", label="measured: A∧B shortens the file"),
                    Line2D([], [], ls="", marker="x", color="k", mew=1.6, label="measured: it does not")]
        if any(not c.get("agrees", True) for c in checks):
            handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="0.45", ms=11, mew=1.8,
                                  label="disagrees with the law, within noise"))
        if any(not c.get("agrees", True) and c.get("decisive", True) for c in checks):
            handles.append(Line2D([], [], ls="", marker="o", mfc="none", mec="tab:red", ms=11, mew=1.8,
                                  label="disagrees with the law"))
    ax.text(0.03, 0.93, "split: A∧B as its own feature", transform=ax.transAxes, fontsize=9, weight="bold")
    ax.text(p[-1] * 0.93, max(rho_min + 0.07, -0.33), "no split:\nA and B only", ha="right", fontsize=9,
            weight="bold")
    ax.legend(handles=handles, loc="lower left", fontsize=8, framealpha=0.9)
    ax.set_xscale("log")
    ax.set_xlim(p[0], p[-1])
    ax.set_ylim(rho_min, 1)
    ax.set_xlabel("p = P(A) = P(B)   (firing rate of each boolean feature)")
    ax.set_ylabel("correlation ρ(A, B)")
    ax.set_title(title, fontsize=9)
    _save(fig, path)
