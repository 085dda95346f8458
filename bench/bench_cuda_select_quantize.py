"""Fused CUDA select + quantize + histogram vs the torch composite (torch.topk + ReLU + rint +
bincount histogram, from bench_select_quantize.py) on bfloat16 pre-activations, beside the
encoder GEMM that produces them; median of several runs, printed as JSON with the device and
the date. The fused kernel is timed twice: results left on the device, and the public API
(codes copied to numpy, histogram merged on the host). Needs a CUDA device.
Usage: python bench/bench_cuda_select_quantize.py [--rows 65536 --d-in 768 --d-sae 24576 --k 64]"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

import torch

import mdlsae
from bench_select_quantize import median_time, torch_composite
from mdlsae.measure.kernels import Histogram, _select_quantize_cuda, select_quantize


def synced(fn):
    def run():
        fn()
        torch.cuda.synchronize()
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    info = mdlsae.build_info()
    if not (mdlsae.cuda_available() and torch.cuda.is_available()):
        sys.exit(f"bench_cuda_select_quantize: needs a CUDA device (mdlsae CUDA build: {info['cuda_compiled']}, "
                 f"devices: {info['cuda_devices'] or 'none'}, torch {torch.__version__} CUDA: "
                 f"{torch.cuda.is_available()})")

    g = torch.Generator(device="cuda").manual_seed(0)
    bf16 = dict(device="cuda", dtype=torch.bfloat16)
    x = torch.randn(args.rows, args.d_in, generator=g, **bf16)
    W_enc = torch.randn(args.d_in, args.d_sae, generator=g, **bf16) / args.d_in ** 0.5
    b_enc = 0.1 * torch.randn(args.d_sae, generator=g, **bf16)
    b_dec = 0.1 * torch.randn(args.d_in, generator=g, **bf16)
    pre = torch.addmm(b_enc, x - b_dec, W_enc)  # [rows, d_sae], pre ~ N(0, 1)

    t_gemm = median_time(synced(lambda: torch.addmm(b_enc, x - b_dec, W_enc)), args.repeats)
    t_fused = median_time(synced(lambda: _select_quantize_cuda(pre, args.k, None, args.step, None, dense_cap=64)),
                          args.repeats)
    t_host = median_time(synced(lambda: select_quantize(pre, k=args.k, step=args.step, hist=Histogram(args.d_sae))),
                         args.repeats)
    t_torch = median_time(synced(lambda: torch_composite(pre, args.k, args.step)), args.repeats)
    print(json.dumps({
        "device": torch.cuda.get_device_name(), "date": str(date.today()), "torch": torch.__version__,
        "torch_cuda": torch.version.cuda, "mdlsae_cuda": info["cuda_version"],
        "rows": args.rows, "d_in": args.d_in, "d_sae": args.d_sae, "k": args.k, "dtype": "bfloat16",
        "repeats": args.repeats, "gemm_s": round(t_gemm, 5), "fused_device_s": round(t_fused, 5),
        "fused_to_numpy_s": round(t_host, 5), "torch_composite_s": round(t_torch, 5),
        "speedup_vs_torch": round(t_torch / t_fused, 2),
    }))


if __name__ == "__main__":
    main()
