"""Our chunk coder beside constriction in non-zeros per second, one thread (issue 12, must-show 3).

Codes: (a) toy codes, 150,000 rows, d=128, D=1024, TopK of the true dictionary, ~8-10 active;
(b) GPT-2-size codes, 16,384 rows, d=768, D=24,576, k=64 (random SAE, Gaussian rows). Step 0.05.

- ours: CSR codes -> chunk bytes (``_C.encode_chunks``, the chunk rows ``encode`` picks) -> CSR codes
  (``_C.decode_chunks``): transposition, gap decomposition and framing included.
- constriction 0.5 ``AnsCoder``, used the usual way for this data: per feature, one
  ``Categorical`` gap model over [0, G) plus an escape symbol G (G: the feature's 99.9th
  percentile gap + 1; escaped gaps add their excess under a ``Uniform``) and one
  ``Categorical`` value model, every model fitted to the very data (ideal for it), all rows in
  one stream, coder calls only: symbol arrays and models are built before the clock starts.
Median of --reps runs; bits of both beside the ideal.

Usage: python bench/coder_vs_constriction.py [--reps 5] [--out bench/results/coder_vs_constriction.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import constriction
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toydata  # noqa: E402

from mdlsae._native import _C  # noqa: E402
from mdlsae.codec.api import auto_chunk_rows, build_model  # noqa: E402
from mdlsae.measure.codes import SparseCodes  # noqa: E402
from mdlsae.measure.entropy import FeatureStats  # noqa: E402
from mdlsae.measure.kernels import Histogram, select_quantize  # noqa: E402
from mdlsae.models.sae import SAE, SAEConfig  # noqa: E402
from mdlsae.studies.demo import true_dictionary_sae  # noqa: E402

def codes_of(batches, sae, k, step=0.05):
    hist, parts = Histogram(sae.d_sae), []
    with torch.no_grad():
        for x in batches:
            parts.append(select_quantize(sae.pre_acts(x), k=k, step=step, hist=hist))
    codes = SparseCodes.concat(parts, sae.d_sae)
    ptr, q, count = hist.to_csr()
    return codes, FeatureStats(codes.n_rows, hist.active_counts(), ptr, q, count)


def toy_codes():
    spec = toydata.ToySpec("toy", d=128, n_features=1024, mean_active=8.0, k=10)
    sae = true_dictionary_sae(toydata.dictionary(spec)[0], spec.k)
    return codes_of((torch.from_numpy(b) for b in toydata.blocks(spec, 150_000)), sae, spec.k)


def gpt2_codes():
    sae = SAE.random(SAEConfig("topk", d_in=768, d_sae=24_576, k=64), seed=0)
    g = torch.Generator().manual_seed(1)
    return codes_of((torch.randn(2048, 768, generator=g) for _ in range(8)), sae, 64)


def median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


def ours(codes, stats, reps):
    model = build_model(stats)
    chunk = auto_chunk_rows(codes.slice(0, min(codes.n_rows, 8192)))  # what encode picks
    te, pay = median_time(lambda: _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, chunk, 0), reps)
    rows = [min(chunk, codes.n_rows - i * chunk) for i in range(len(pay))]
    td, dec = median_time(lambda: _C.decode_chunks(model, pay, rows, 0), reps)
    assert SparseCodes(*dec, codes.d_sae) == codes
    return te, td, 8 * sum(len(p) for p in pay), chunk


def constriction_plan(codes):
    """Per feature: (gap symbols, gap model, escape excess, uniform, value symbols, value model)."""
    rows = codes.rows()
    order = np.argsort(codes.index, kind="stable")
    feat, r, q = codes.index[order], rows[order], codes.q[order]
    bounds = np.searchsorted(feat, np.arange(codes.d_sae + 1))
    plan = []
    for f in range(codes.d_sae):
        a, b = bounds[f], bounds[f + 1]
        if a == b:
            continue
        pos = r[a:b]
        gaps = np.diff(np.concatenate([[-1], pos])) - 1
        G = int(np.quantile(gaps, 0.999)) + 1
        sym = np.minimum(gaps, G).astype(np.int32)
        gm = constriction.stream.model.Categorical(np.bincount(sym, minlength=G + 1).astype(np.float64), perfect=False)
        excess = (gaps[gaps >= G] - G).astype(np.int32)
        um = constriction.stream.model.Uniform(int(excess.max()) + 2) if len(excess) else None  # range >= 2
        vals, vsym = np.unique(q[a:b], return_inverse=True)
        vm = constriction.stream.model.Categorical(np.bincount(vsym).astype(np.float64), perfect=False)
        plan.append((sym, gm, excess, um, vsym.astype(np.int32), vm))
    return plan


def constriction_run(plan, reps):
    def enc():
        c = constriction.stream.stack.AnsCoder()
        for sym, gm, excess, um, vsym, vm in reversed(plan):  # a stack: the last encoded decodes first
            c.encode_reverse(vsym, vm)
            if um is not None:
                c.encode_reverse(excess, um)
            c.encode_reverse(sym, gm)
        return c.get_compressed()

    te, words = median_time(enc, reps)

    def dec():
        c = constriction.stream.stack.AnsCoder(words)
        for sym, gm, excess, um, vsym, vm in plan:
            c.decode(gm, len(sym))
            if um is not None:
                c.decode(um, len(excess))
            c.decode(vm, len(vsym))

    td, _ = median_time(dec, reps)
    return te, td, 32 * len(words)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="bench/results/coder_vs_constriction.json")
    a = ap.parse_args()
    _C.set_num_threads(1)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    results = {}
    for name, make in (("toy d=128 D=1024", toy_codes), ("GPT-2 size d=768 D=24576 k=64", gpt2_codes)):
        codes, stats = make()
        oe, od, obits, chunk = ours(codes, stats, a.reps)
        ce, cd, cbits = constriction_run(constriction_plan(codes), a.reps)
        nnz = codes.nnz
        r = {"rows": codes.n_rows, "nnz": nnz, "chunk_rows": chunk, "estimate_bits": stats.estimate_bits(),
             "ours_bits": obits, "constriction_bits": cbits,
             "ours_enc_Mnnz_s": nnz / oe / 1e6, "ours_dec_Mnnz_s": nnz / od / 1e6,
             "constriction_enc_Mnnz_s": nnz / ce / 1e6, "constriction_dec_Mnnz_s": nnz / cd / 1e6}
        r["enc_ratio"] = r["ours_enc_Mnnz_s"] / r["constriction_enc_Mnnz_s"]
        r["dec_ratio"] = r["ours_dec_Mnnz_s"] / r["constriction_dec_Mnnz_s"]
        results[name] = r
        print(name, json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in r.items()}), flush=True)
    out = {"date": datetime.date.today().isoformat(), "machine": f"{platform.node()} {os.cpu_count()} cpus",
           "constriction": "0.5.0", "threads": 1, "reps": a.reps, "results": results}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
