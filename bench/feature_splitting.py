"""Seed 002 §7 feature-splitting phase diagram: when does representing A∧B as its own feature
shorten the description length? The analytic DL over (p, ρ) with p_A = p_B = p, confirmed at
sampled points by the package's estimator on both SAEs measured at their effective precision
(and by real encoded files once ``mdlsae.splitting.encoded_file_bits`` has a codec).

Usage: python bench/feature_splitting.py [--out bench/results/splitting] [--rows 50000]
Writes phase_diagram.png and results.json."""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import numpy as np

from mdlsae.fileio import atomic_file
from mdlsae.plots import phase_diagram
from mdlsae.selection import evaluate_sae
from mdlsae.splitting import analytic_dl, boundary_rho, encoded_file_bits, p_and, phase_grid, sample_rows, split_saes

CHECK_P = (0.003, 0.01, 0.03, 0.1, 0.3)
CHECK_RHO = (-0.2, 0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.95)


def check(p: float, rho: float, rows: int, seed: int) -> dict:
    """Both SAEs measured on sampled rows at a tolerance of 0.1 % of the signal power."""
    x, a, b, f = sample_rows(rows, p, p, rho, seed=seed)
    eps = 1e-3 * float((x.astype(np.float64) ** 2).mean())
    two, three = split_saes(f)
    out = {"p": p, "rho": rho, "rows": rows, "tolerance": eps}
    for name, sae in (("no_split", two), ("split", three)):
        c = evaluate_sae(x, sae, eps, "mse", name=name)
        bits = encoded_file_bits(x, sae, c.precision.step)
        out[name] = {"dl_bits_per_row": c.dl_bits_per_row, "l0": c.report.l0, "mse": c.report.mse,
                     "step": c.precision.step, "meets": c.meets,
                     "file_bits_per_row": None if bits is None else bits / rows}
    pa, pb, pab = a.mean(), b.mean(), (a & b).mean()
    emp_two, emp_three = analytic_dl(pa, pb, pab)  # the formula on the sample's own frequencies
    true_two, true_three = analytic_dl(p, p, p_and(p, p, rho))
    out["analytic_empirical"] = {"no_split": float(emp_two), "split": float(emp_three)}
    out["analytic_true"] = {"no_split": float(true_two), "split": float(true_three)}
    out["gain"] = out["no_split"]["dl_bits_per_row"] - out["split"]["dl_bits_per_row"]
    out["gain_true"] = float(true_two - true_three)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/splitting")
    ap.add_argument("--rows", type=int, default=50_000)
    args = ap.parse_args()
    out = Path(args.out)
    ps, rhos = np.geomspace(1e-3, 0.5, 160), np.linspace(-1, 1, 401)
    gain = phase_grid(ps, rhos)
    checks = [check(p, r, args.rows, seed=i) for i, (p, r) in enumerate(
        (p, r) for p in CHECK_P for r in CHECK_RHO if not np.isnan(p_and(p, p, r)))]
    rel = [abs(c[k]["dl_bits_per_row"] - c["analytic_empirical"][k]) / c["analytic_empirical"][k]
           for c in checks for k in ("no_split", "split") if c["analytic_empirical"][k] > 0]
    agree = sum(np.sign(c["gain"]) == np.sign(c["gain_true"]) for c in checks)
    phase_diagram(ps, rhos, gain, out / "phase_diagram.png",
                  [{"p": c["p"], "rho": c["rho"], "gain": c["gain"]} for c in checks],
                  title="feature splitting, p_A = p_B = p (line: break-even; o/x: measured split / don't)")
    res = {
        "date": date.today().isoformat(), "machine": f"2-core {platform.machine()} CPU",
        "boundary_rho": {f"{p:g}": boundary_rho(p) for p in (0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5)},
        "estimator_vs_formula_max_rel_diff": max(rel),
        "sign_agreement_with_true_law": f"{agree} of {len(checks)}",
        "file_check": "pending: no codec in this build" if checks[0]["split"]["file_bits_per_row"] is None else "done",
        "checks": checks,
    }
    with atomic_file(out / "results.json") as f:
        f.write(json.dumps(res, indent=1).encode())
    print(json.dumps({k: v for k, v in res.items() if k != "checks"}, indent=1))


if __name__ == "__main__":
    main()
