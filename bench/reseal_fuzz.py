"""CRC-resealed mutation run (issue 17, must-show 2): thousands of hostile .mdl files, each a good
file (flat or with parents, global or per-feature steps, one or several streams per chunk)
mutated in its header JSON, model tables, steps, index or chunks and re-sealed with correct
checksums, decoded in a child process. Every file must give an MdlsaeError or decode; a crash,
a hang over the timeout or any other exception is a finding. Writes
bench/results/reseal_fuzz.json.

    PYTHONPATH=python python3 bench/reseal_fuzz.py --files 2000
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reseal import Layout, decode_all, mutate  # noqa: E402

from mdlsae.codec import encode  # noqa: E402
from mdlsae.data import make_toy  # noqa: E402
from mdlsae.models.sae import SAE, SAEConfig  # noqa: E402


def base_files(tmp: Path) -> list[Path]:
    x = torch.from_numpy(make_toy(n_rows=900, d=16, n_features=48, mean_active=3, seed=2).x)
    sae = SAE.random(SAEConfig("topk", d_in=16, d_sae=48, k=4), seed=0)
    parents = np.full(48, -1)
    parents[1::2] = np.arange(0, 47, 2)
    steps = np.linspace(0.05, 0.2, 48).astype(np.float32)
    variants = {"flat": dict(step=0.1), "parents": dict(step=0.1, parents=parents),
                "per_feature": dict(step=steps, chunk_rows=200), "streams": dict(step=0.1, features_per_stream=8,
                                                                                 chunk_rows=300)}
    out = []
    for name, kw in variants.items():
        encode(x, sae, tmp / f"{name}.mdl", **kw)
        out.append(tmp / f"{name}.mdl")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds a decode may take before it is a hang")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench/results/reseal_fuzz.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        layouts = [Layout(p.read_bytes()) for p in base_files(tmp)]
        paths, what = [], []
        for i in range(args.files):
            desc, data = mutate(layouts[i % len(layouts)], rng)
            paths.append(tmp / f"m{i}.mdl")
            paths[-1].write_bytes(data)
            what.append(desc)
        t = time.perf_counter()
        results = decode_all(paths, timeout=args.timeout)
        seconds = time.perf_counter() - t
    kinds = collections.Counter(r.split(" ")[0] for r in results)
    by_section = collections.defaultdict(collections.Counter)
    for w, r in zip(what, results):
        by_section[w.split(":")[0]][r.split(" ")[0]] += 1
    findings = [{"mutation": w, "result": r} for w, r in zip(what, results) if r not in ("ok", "error")]
    report = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {platform.machine()}",
              "files": args.files, "timeout_s": args.timeout, "seconds": round(seconds, 1),
              "results": dict(kinds), "by_section": {k: dict(v) for k, v in sorted(by_section.items())},
              "findings": findings}
    Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("files", "seconds", "results", "by_section")}, indent=1))
    if findings:
        print(f"{len(findings)} findings, e.g. {findings[:5]}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
