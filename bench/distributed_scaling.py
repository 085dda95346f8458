"""One rank against two under torchrun at GPT-2 size (issue 15, must-show 2).

d=768, D=24,576, TopK k=64, 65,536 float32 rows: a random SAE (unit decoder rows, encoder the
transpose) on rows made of 64 of its decoder rows with exponential weights plus noise, saved as
.npy. ``mdlsae encode`` runs as a fresh command, alternately on one process with 2 threads (torch
and the native kernels) and under ``torchrun --nproc-per-node 2`` with 1 thread per rank (the
same two cores), --reps times each; medians reported, and every 2-rank file is checked to be
byte-identical to the 1-rank one (SOURCE_DATE_EPOCH fixed). The machine's load average is
recorded before and after: other processes share its cores.

Usage: python bench/distributed_scaling.py [--rows 65536] [--reps 3] [--out bench/results/distributed_scaling.json]
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

from mdlsae.models.sae import SAE, SAEConfig

ROOT = Path(__file__).resolve().parents[1]


def make_data(folder: Path, rows: int, d: int, d_sae: int, k: int) -> None:
    sae = SAE.random(SAEConfig("topk", d_in=d, d_sae=d_sae, k=k), seed=0)
    sae.save(folder / "sae")
    g = torch.Generator().manual_seed(1)
    x = np.lib.format.open_memmap(folder / "acts.npy", mode="w+", dtype=np.float32, shape=(rows, d))
    with torch.no_grad():
        for a in range(0, rows, 8192):
            n = min(8192, rows - a)
            idx = torch.randint(0, d_sae, (n, k), generator=g)
            w = torch.empty(n, k).exponential_(generator=g)
            x[a:a + n] = (torch.einsum("nk,nkd->nd", w, sae.W_dec[idx]) + 0.05 * torch.randn(n, d, generator=g)).numpy()
    x.flush()


def cpu_model() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor()


def run(cmd: list[str], threads: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "SOURCE_DATE_EPOCH": "1700000000",
           "OMP_NUM_THREADS": str(threads)}
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=65536)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--out", default=str(ROOT / "bench/results/distributed_scaling.json"))
    a = ap.parse_args()
    d, d_sae, k = 768, 24576, 64
    with tempfile.TemporaryDirectory(dir=ROOT / "build") as tmp:
        tmp = Path(tmp)
        make_data(tmp, a.rows, d, d_sae, k)
        encode = ["-m", "mdlsae.cli", "encode", str(tmp / "acts.npy"), "--sae", str(tmp / "sae"), "--step",
                  str(a.step), "--json", "--no-progress"]
        one = [sys.executable, *encode, "-o", str(tmp / "one.mdl")]
        two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               *encode, "-o", str(tmp / "two.mdl")]
        load_before = os.getloadavg()
        times = {"1 rank x 2 threads": [], "2 ranks x 1 thread": []}
        for _ in range(a.reps):
            times["1 rank x 2 threads"].append(run(one, 2))
            times["2 ranks x 1 thread"].append(run(two, 1))
            assert (tmp / "one.mdl").read_bytes() == (tmp / "two.mdl").read_bytes(), "files differ"
        info = json.loads(subprocess.run([sys.executable, "-m", "mdlsae.cli", "inspect", str(tmp / "one.mdl"),
                                          "--json"], env={**os.environ, "PYTHONPATH": str(ROOT / "python")},
                                         capture_output=True, text=True, check=True).stdout)
    med = {name: statistics.median(t) for name, t in times.items()}
    res = {"bench": "distributed_scaling", "date": datetime.datetime.now().isoformat(timespec="seconds"),
           "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cores": os.cpu_count(),
                       "torch": torch.__version__, "load_average_before": load_before,
                       "load_average_after": os.getloadavg(),
                       "note": "cores shared with other engineers' jobs while this ran"},
           "shape": {"rows": a.rows, "d_in": d, "d_sae": d_sae, "k": k, "step": a.step},
           "file": {"bytes": info["file_bytes"], "l0": info["l0"], "bits_per_row": info["bits_per_row"]},
           "seconds": times, "median_seconds": med, "byte_identical": True,
           "speedup_2_ranks": med["1 rank x 2 threads"] / med["2 ranks x 1 thread"]}
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({"median_seconds": med, "speedup_2_ranks": res["speedup_2_ranks"], "load": load_before}))


if __name__ == "__main__":
    main()
