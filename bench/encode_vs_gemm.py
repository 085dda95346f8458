"""Encode and measure at GPT-2 size against the bare encoder GEMM (issue 12, must-show 2).

d=768, D=24,576, TopK k=64, 16,384 float32 rows; a random SAE (unit decoder rows, encoder its
transpose) on Gaussian rows. Side by side in one process, median of --reps runs each:
- the bare GEMM ``x @ W_enc`` over the same rows, in batches of 4,096 rows (what anyone must
  at least compute to get the latents),
- ``codec.encode`` to a real .mdl file (one SAE pass, selection, counts, coder, file),
- ``measure_dl`` (one SAE pass, selection, histograms, reconstruction error),
- the command ``mdlsae dl`` on the same rows saved as .npy (a fresh process: it also pays
  Python's and torch's start, timed apart as ``mdlsae --help``; these runs come first, before
  this process runs any GEMM),
and, for reference, the same GEMM into one reused output buffer (what ``scan`` does: a fresh
[4096, D] output costs page faults). At the default memory budget; all cores.

Usage: python bench/encode_vs_gemm.py [--rows 16384] [--reps 3] [--out bench/results/encode_vs_gemm.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mdlsae import codec
from mdlsae.budget import budget_bytes
from mdlsae.measure import measure_dl
from mdlsae.models.sae import SAE, SAEConfig


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=16_384)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=24_576)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default="bench/results/encode_vs_gemm.json")
    a = ap.parse_args()
    sae = SAE.random(SAEConfig("topk", d_in=a.d, d_sae=a.d_sae, k=a.k), seed=0)
    x = torch.randn(a.rows, a.d, generator=torch.Generator().manual_seed(1))
    tmp = Path(tempfile.mkdtemp())
    out = tmp / "gpt2.mdl"
    np.save(tmp / "x.npy", x.numpy())
    sae.save(tmp / "sae")
    cli = [sys.executable, "-m", "mdlsae.cli"]
    buf = torch.empty(4096, a.d_sae)

    def gemm():
        with torch.no_grad():
            for s in range(0, a.rows, 4096):
                x[s:s + 4096] @ sae.W_enc

    def gemm_reused():
        with torch.no_grad():
            for s in range(0, a.rows, 4096):
                torch.matmul(x[s:s + 4096], sae.W_enc, out=buf)

    def run(*args):
        subprocess.run(cli + list(args), check=True, stdout=subprocess.DEVNULL)

    runs = {"gemm": [], "gemm_reused_buffer": [], "encode": [], "dl": [], "cli_dl": [], "cli_start": []}
    # the commands first: a fresh process started after this one has run its GEMMs (holding their
    # buffers) ran 0.3-0.6 s slower here, a cost of the bench, not of the command
    for _ in range(a.reps):
        runs["cli_dl"].append(timed(lambda: run("dl", str(tmp / "x.npy"), "--sae", str(tmp / "sae"),
                                                "--step", "0.05", "--no-progress")))
        runs["cli_start"].append(timed(lambda: run("--help")))
    for _ in range(a.reps):  # interleaved, so drift in the machine's speed hits all alike
        runs["gemm"].append(timed(gemm))
        runs["gemm_reused_buffer"].append(timed(gemm_reused))
        runs["encode"].append(timed(lambda: codec.encode(x, sae, out, step=0.05)))
        runs["dl"].append(timed(lambda: measure_dl(x, sae, step=0.05)))
    med = {k: statistics.median(v) for k, v in runs.items()}
    res = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cpus, "
           f"torch {torch.__version__}, {torch.get_num_threads()} threads", "rows": a.rows, "d_in": a.d,
           "d_sae": a.d_sae, "k": a.k, "budget_bytes": budget_bytes(), "runs_s": runs, "median_s": med,
           "encode_over_gemm": med["encode"] / med["gemm"], "dl_over_gemm": med["dl"] / med["gemm"],
           "cli_dl_over_gemm": med["cli_dl"] / med["gemm"],
           "cli_dl_less_start_over_gemm": (med["cli_dl"] - med["cli_start"]) / med["gemm"],
           "file_bytes": out.stat().st_size}
    print(json.dumps({k: res[k] for k in ("median_s", "encode_over_gemm", "dl_over_gemm", "cli_dl_over_gemm",
                                       "cli_dl_less_start_over_gemm")}, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
