"""Seed 002 §7 feature-splitting phase diagram: when does representing A∧B as its own feature
shorten the description length? The analytic DL over (p, ρ) with p_A = p_B = p, confirmed at
sampled points by the package's estimator on both SAEs measured at their effective precision,
and by real ``.mdl`` files: the rows are encoded with each SAE at that precision and the file's
payload is compared with the estimate, and its split gain with the analytic law.

Usage: python bench/feature_splitting.py [--out bench/results/splitting] [--rows 500000]
Writes phase_diagram.png and results.json (~1.5 min on one core)."""

from __future__ import annotations

import argparse
import json
import platform
from datetime import date
from pathlib import Path

import numpy as np
import torch

from mdlsae.fileio import atomic_file
from mdlsae.studies.plots import phase_diagram
from mdlsae.selection import evaluate_sae
from mdlsae.studies.splitting import analytic_dl, boundary_rho, encoded_file_bits, p_and, phase_grid, sample_rows, split_saes

CHECK_P = (0.003, 0.01, 0.03, 0.1, 0.3)
CHECK_RHO = (-0.2, 0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 0.8, 0.95)


def gain_sampling_sd(p: float, rho: float, rows: int, draws: int = 2000, seed: int = 0) -> float:
    """Standard deviation of the split gain (bits/row) measured on ``rows`` sampled rows: the
    analytic DLs on the frequencies of multinomial draws from the true joint law."""
    p_ab = float(p_and(p, p, rho))
    probs = np.array([p_ab, p - p_ab, p - p_ab, 1 - 2 * p + p_ab]).clip(0)
    n = np.random.default_rng(seed).multinomial(rows, probs / probs.sum(), size=draws) / rows
    two, three = analytic_dl(n[:, 0] + n[:, 1], n[:, 0] + n[:, 2], n[:, 0])
    return float(np.std(two - three))


def check(p: float, rho: float, rows: int, seed: int) -> dict:
    """Both SAEs measured on sampled rows at a tolerance of 0.1 % of the signal power, and their
    codes encoded into real files (one chunk each)."""
    x, a, b, f = sample_rows(rows, p, p, rho, seed=seed)
    eps = 1e-3 * float((x.astype(np.float64) ** 2).mean())
    two, three = split_saes(f)
    out = {"p": p, "rho": rho, "rows": rows, "tolerance": eps}
    for name, sae in (("no_split", two), ("split", three)):
        c = evaluate_sae(x, sae, eps, "mse", name=name)
        fb = encoded_file_bits(x, sae, c.precision.step)
        out[name] = {"dl_bits_per_row": c.dl_bits_per_row, "l0": c.report.l0, "mse": c.report.mse,
                     "step": c.precision.step, "meets": c.meets, "file": fb.to_dict(),
                     "payload_minus_estimate_bits": fb.payload_bits - c.dl_bits_per_row * rows,
                     "payload_over_estimate": fb.payload_bits / (c.dl_bits_per_row * rows) - 1}
    pa, pb, pab = a.mean(), b.mean(), (a & b).mean()
    emp_two, emp_three = analytic_dl(pa, pb, pab)  # the formula on the sample's own frequencies
    true_two, true_three = analytic_dl(p, p, p_and(p, p, rho))
    out["analytic_empirical"] = {"no_split": float(emp_two), "split": float(emp_three)}
    out["analytic_true"] = {"no_split": float(true_two), "split": float(true_three)}
    out["gain"] = out["no_split"]["dl_bits_per_row"] - out["split"]["dl_bits_per_row"]
    out["gain_file"] = (out["no_split"]["file"]["payload_bits_per_row"]
                        - out["split"]["file"]["payload_bits_per_row"])
    out["gain_true"] = float(true_two - true_three)
    out["gain_sampling_sd"] = gain_sampling_sd(p, rho, rows)
    # decisive: the law's gain is 3 sampling SDs (plus the file's 1-byte resolution) away from 0
    out["decisive"] = abs(out["gain_true"]) > 3 * out["gain_sampling_sd"] + 8 / rows
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench/results/splitting")
    ap.add_argument("--rows", type=int, default=500_000)
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    ps, rhos = np.geomspace(1e-3, 0.5, 160), np.linspace(-1, 1, 401)
    gain = phase_grid(ps, rhos)
    checks = [check(p, r, args.rows, seed=i) for i, (p, r) in enumerate(
        (p, r) for p in CHECK_P for r in CHECK_RHO if not np.isnan(p_and(p, p, r)))]
    sides = [c[k] for c in checks for k in ("no_split", "split")]
    rel = [abs(c[k]["dl_bits_per_row"] - c["analytic_empirical"][k]) / c["analytic_empirical"][k]
           for c in checks for k in ("no_split", "split") if c["analytic_empirical"][k] > 0]
    file_rel = [abs(s["payload_over_estimate"]) for s in sides]
    file_excess = [s["payload_minus_estimate_bits"] for s in sides]
    big = [abs(s["payload_over_estimate"]) for s in sides if s["dl_bits_per_row"] * args.rows >= 1e5]

    def agrees(c, key):
        return bool(np.sign(c[key]) == np.sign(c["gain_true"]))

    def agrees_sample(c):  # the file against the law on the sample's own frequencies
        emp = c["analytic_empirical"]["no_split"] - c["analytic_empirical"]["split"]
        return bool(np.sign(c["gain_file"]) == np.sign(emp)) or abs(emp) * args.rows < 8

    decisive = [c for c in checks if c["decisive"]]
    agree = sum(agrees(c, "gain") for c in checks)
    agree_file = sum(agrees(c, "gain_file") for c in checks)
    agree_file_decisive = sum(agrees(c, "gain_file") for c in decisive)
    worst = max(sides, key=lambda s: abs(s["payload_over_estimate"]))
    phase_diagram(ps, rhos, gain, out / "phase_diagram.png",
                  [{"p": c["p"], "rho": c["rho"], "gain": c["gain_file"], "agrees": agrees(c, "gain_file"),
                    "decisive": c["decisive"]} for c in checks],
                  title=f"Feature splitting (seed 002 §7): does the composite feature A∧B shorten the DL?  "
                        f"(p_A = p_B = p)\ncolour: analytic law;  markers: payload bits of real .mdl files, "
                        f"{args.rows:,} sampled rows each\n{agree_file} of {len(checks)} on the law's side; "
                        f"{agree_file_decisive} of {len(decisive)} where the law's gain exceeds the sampling noise")
    res = {
        "date": date.today().isoformat(), "machine": f"2-core {platform.machine()} CPU, one thread",
        "rows_per_check": args.rows,
        "boundary_rho": {f"{p:g}": boundary_rho(p) for p in (0.001, 0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5)},
        "estimator_vs_formula_max_rel_diff": max(rel),
        "file_payload_vs_estimate_max_rel_diff": max(file_rel),
        "file_payload_vs_estimate_max_rel_diff_estimate_ge_1e5_bits": max(big) if big else None,
        "file_payload_minus_estimate_bits": {"min": min(file_excess), "max": max(file_excess)},
        "file_worst_point": {"p": next(c["p"] for c in checks if worst in (c["no_split"], c["split"])),
                             "rho": next(c["rho"] for c in checks if worst in (c["no_split"], c["split"])),
                             "estimate_bits": worst["file"]["estimate_bits"],
                             "payload_bits": worst["file"]["payload_bits"]},
        "sign_agreement_with_true_law": f"{agree} of {len(checks)}",
        "file_sign_agreement_with_true_law": f"{agree_file} of {len(checks)}",
        "file_sign_agreement_with_true_law_decisive_points": f"{agree_file_decisive} of {len(decisive)}",
        "file_sign_agreement_with_law_on_sample_frequencies": f"{sum(map(agrees_sample, checks))} of {len(checks)}",
        "file_sign_disagreements": [{"p": c["p"], "rho": c["rho"], "gain_file": c["gain_file"],
                                     "gain_true": c["gain_true"], "gain_sampling_sd": c["gain_sampling_sd"],
                                     "decisive": c["decisive"]} for c in checks if not agrees(c, "gain_file")],
        "file_check": "done: one single-chunk .mdl file per SAE and point",
        "checks": checks,
    }
    with atomic_file(out / "results.json") as f:
        f.write(json.dumps(res, indent=1).encode())
    print(json.dumps({k: v for k, v in res.items() if k != "checks"}, indent=1))
    print(f"{'p':>6} {'rho':>5} | {'est no-split':>12} {'file':>9} | {'est split':>10} {'file':>9} | "
          f"{'gain est':>9} {'gain file':>9} {'gain law':>9} {'sd':>7}  (bits/row)")
    for c in checks:
        n, sp = c["no_split"], c["split"]
        print(f"{c['p']:>6g} {c['rho']:>5g} | {n['dl_bits_per_row']:>12.5f} {n['file']['payload_bits_per_row']:>9.5f} | "
              f"{sp['dl_bits_per_row']:>10.5f} {sp['file']['payload_bits_per_row']:>9.5f} | "
              f"{c['gain']:>9.5f} {c['gain_file']:>9.5f} {c['gain_true']:>9.5f} {c['gain_sampling_sd']:>7.5f}")


if __name__ == "__main__":
    main()
