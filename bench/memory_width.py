"""Peak memory of `mdlsae encode`, `mdlsae dl` and `mdlsae select` as the dictionary widens
(issue 12, must-show 1): 40,000 rows x d=256 float32, random TopK SAEs (k=32) of width
D = 16,384, 65,536 and 262,144, each command a child process whose peak RSS is read from
wait4's rusage (the parent imports no torch and holds no SAE: a forked child's peak starts
from its parent's), at the default budget (256 MiB). A child that only imports mdlsae and loads
the SAE gives the fixed part (interpreter, torch, the SAE's weights: 2·d·D·4 bytes).

Usage: python bench/memory_width.py [--rows 40000] [--widths 16384,65536,262144] [--out bench/results/memory_width.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def peak(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a child process."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=40_000)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--k", type=int, default=32)
    ap.add_argument("--widths", default="16384,65536,262144")
    ap.add_argument("--out", default="bench/results/memory_width.json")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(dir=os.environ.get("TMPDIR", "/tmp")))
    rng = np.random.default_rng(0)
    acts = tmp / "acts.npy"
    np.save(acts, rng.standard_normal((a.rows, a.d), dtype=np.float32))  # 41 MB, freed at once
    mdlsae = [sys.executable, "-m", "mdlsae.cli"]
    results = []
    for D in (int(w) for w in a.widths.split(",")):
        sae_dir = tmp / f"sae_{D}"
        # made in a child: a forked child's peak RSS starts from its parent's, so the parent stays small
        subprocess.run([sys.executable, "-c", "from mdlsae.models.sae import SAE, SAEConfig; "
                        f"SAE.random(SAEConfig('topk', d_in={a.d}, d_sae={D}, k={a.k}), seed=1).save({str(sae_dir)!r})"],
                       check=True)
        base, _ = peak([sys.executable, "-c", f"from mdlsae.models.sae import SAE; SAE.load({str(sae_dir)!r})"])
        row = {"d_sae": D, "weights_mb": 2 * a.d * D * 4 / 2**20, "load_only_mb": base}
        for name, args in (("encode", ["encode", str(acts), "--sae", str(sae_dir), "--step", "0.05",
                                       "-o", str(tmp / "out.mdl")]),
                           ("dl", ["dl", str(acts), "--sae", str(sae_dir), "--step", "0.05"]),
                           ("select", ["select", str(acts), "--sae", str(sae_dir), "--tolerance", "10"])):
            mb, wall = peak(mdlsae + args + ["--no-progress"])
            row[f"{name}_mb"], row[f"{name}_s"] = mb, wall
        results.append(row)
        print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
        (tmp / "out.mdl").unlink(missing_ok=True)
    out = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cpus",
           "rows": a.rows, "d_in": a.d, "k": a.k, "budget": os.environ.get("MDLSAE_MEMORY", "256M (default)"),
           "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
