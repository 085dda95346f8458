"""What a half-precision encoder GEMM (``--dtype bfloat16|float16``) does to the codes (issue 12):
at GPT-2 size (d=768, D=24,576, TopK k=64), the share of non-zeros whose feature or value
differs from float32's, the rows touched, the DL and MSE at the same step, and the wall time of
``mdlsae dl``'s measurement in each dtype, side by side in one run (median of 3); with
``--real``, the same for a trained SAE on its own activations. Writes
bench/results/dtype_codes.json.

    PYTHONPATH=python python3 bench/dtype_codes.py [--rows 8192] [--real SAE_DIR ACTS.npy STEP]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from mdlsae.data.acts import as_activations
from mdlsae.measure.dl import measure_dl
from mdlsae.measure.kernels import select_quantize
from mdlsae.models.sae import SAE, SAEConfig

ROOT = Path(__file__).resolve().parents[1]


def compare(a, b) -> dict:
    """Shares of a's non-zeros that b drops or adds (feature changes) or codes with another value,
    and of rows with any change."""
    def keys(c):
        rows = np.repeat(np.arange(c.n_rows), np.diff(c.row_ptr))
        return rows.astype(np.int64) * c.d_sae + c.index, c.q

    ka, qa = keys(a)
    kb, qb = keys(b)
    common, ia, ib = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    moved = np.setxor1d(ka, kb, assume_unique=True)
    revalued = common[qa[ia] != qb[ib]]
    touched = np.unique(np.concatenate([moved, revalued]) // a.d_sae)
    return {"features_changed": float(len(moved) / 2 / len(ka)), "values_changed": float(len(revalued) / len(ka)),
            "rows_touched": float(len(touched) / a.n_rows)}


def measure(sae: SAE, x: torch.Tensor, step: float, repeats: int) -> dict:
    """Per compute dtype: DL, MSE, FVU and measuring time at ``step``, and the code changes vs float32."""
    out, ref = {}, None
    k, threshold, _ = sae.selection()
    for name in ("float32", "bfloat16", "float16"):
        sae.set_compute_dtype(name)
        with torch.no_grad():
            gemm, bias = sae.encoder_parts(x)
            codes = select_quantize(gemm, k=k, threshold=threshold, step=step, bias=bias)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            rep = measure_dl(x, sae, step)
            times.append(time.perf_counter() - t)
        row = {"dl_bits_per_row": rep.dl_bits_per_row, "mse": rep.mse, "fvu": rep.fvu, "l0": codes.nnz / x.shape[0],
               "measure_seconds_median": statistics.median(times)}
        if ref is None:
            ref = codes
        else:
            row.update(compare(ref, codes))
        out[name] = row
        print(name, json.dumps(row))
    sae.set_compute_dtype("float32")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=8192)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--real", nargs=3, metavar=("SAE_DIR", "ACTS", "STEP"),
                    help="also a trained SAE on its own activations (the first --rows rows) at STEP")
    args = ap.parse_args()
    torch.manual_seed(0)
    sae = SAE.random(SAEConfig("topk", d_in=args.d, d_sae=args.d_sae, k=args.k), seed=0)
    # activations built from the dictionary itself, so that latents have clear winners
    idx = torch.randint(0, args.d_sae, (args.rows, args.k))
    coef = torch.rand(args.rows, args.k) * 2
    x = torch.einsum("rk,rkd->rd", coef, sae.W_dec.detach()[idx]) + 0.05 * torch.randn(args.rows, args.d)
    out = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {platform.processor() or platform.machine()}",
           "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": args.rows,
           "gpt2_size_random": {"d_in": args.d, "d_sae": args.d_sae, "k": args.k, "step": args.step,
                                "dtypes": measure(sae, x, args.step, args.repeats)}}
    if args.real:
        sae_dir, acts, step = args.real
        real = SAE.load(sae_dir)
        xr = as_activations(acts).rows(0, min(args.rows, as_activations(acts).n_rows))
        out["real"] = {"sae": sae_dir, "acts": acts, "d_in": real.d_in, "d_sae": real.d_sae, "k": real.cfg.k,
                       "step": float(step), "dtypes": measure(real, xr, float(step), args.repeats)}
    path = ROOT / "bench/results/dtype_codes.json"
    path.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
