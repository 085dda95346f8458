"""Fused native select + quantize + histogram vs the plain torch composite
(torch.topk + ReLU + rint + bincount histogram), side by side in one run, median of several
runs. Usage: python bench/bench_select_quantize.py [--rows 16384 --d-sae 16384 --k 64]"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date

import torch

import mdlsae
from mdlsae.measure.kernels import Histogram, select_quantize


def torch_composite(pre: torch.Tensor, k: int, step: float, cap: int = 64) -> tuple:
    vals, idx = torch.topk(pre, k, dim=1)
    q = torch.round(torch.relu(vals.float()) / step)
    keep = q >= 1
    f, qv = idx[keep], q[keep].long()
    dense = torch.bincount(f * cap + qv.clamp(max=cap - 1), minlength=pre.shape[1] * cap)
    return idx, q, dense


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--d-sae", type=int, default=16384)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    args = ap.parse_args()
    g = torch.Generator().manual_seed(0)
    results = []
    for name in args.dtypes.split(","):
        dtype = getattr(torch, name)
        pre = torch.randn(args.rows, args.d_sae, generator=g).to(dtype)
        t_fused = median_time(lambda: select_quantize(pre, k=args.k, step=args.step, hist=Histogram(args.d_sae)),
                              args.repeats)
        t_torch = median_time(lambda: torch_composite(pre, args.k, args.step), args.repeats)
        r = {"dtype": name, "rows": args.rows, "d_sae": args.d_sae, "k": args.k,
             "fused_s": round(t_fused, 4), "torch_s": round(t_torch, 4), "speedup": round(t_torch / t_fused, 2)}
        results.append(r)
        print(json.dumps(r))
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "mdlsae_threads": mdlsae.build_info()["threads"], "torch": torch.__version__,
                      "date": str(date.today())}))


if __name__ == "__main__":
    main()
