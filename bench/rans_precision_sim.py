"""Where the payload's excess over the DL estimate comes from (issue 3 finding).

Takes the exact symbol sequence our coder writes for one 16384-row chunk of toy codes (see
verify_dl.symbol_sequence), and runs a pure-Python copy of csrc/codec/rans.h's encoder
(64-bit state, 32-bit words, L = 2^31) over it at several probability precisions. With 31-bit
probabilities (what rans.h uses: M = L) the coder itself loses ~0.0014 bit per symbol (~0.1 %
of the payload); at <= 28 bits (L/M >= 8) the loss drops to the 64-bit final state.

Usage: python bench/rans_precision_sim.py [--rows 16384] [--out bench/results/rans_precision_sim.json]   (~10 s)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toydata  # noqa: E402
import verify_dl  # noqa: E402

from mdlsae import codec  # noqa: E402
from mdlsae._native import _C  # noqa: E402
from mdlsae.demo import true_dictionary_sae  # noqa: E402
from mdlsae.kernels import select_quantize  # noqa: E402
from mdlsae.measure import scan  # noqa: E402


def rans_bits(seq: dict, prob_bits: int, seed: int = 0) -> tuple[int, float]:
    """Bits of rans.h's encoder (L = 2^31, 32-bit renormalisation) at ``prob_bits`` precision,
    and -log2 P of the same symbols at that precision."""
    m = 1 << prob_bits
    f1 = np.clip(seq["f1"] >> (31 - prob_bits), 1, m - 1)
    ops = [(m - int(f), int(f)) if b else (0, m - int(f)) for b, f in zip(seq["bits"], f1)]
    hp, hc = seq["hist_ptr"], seq["hist_count"]
    tabs = {}
    for f in range(len(hp) - 1):
        c = hc[hp[f]:hp[f + 1]].astype(np.int64)
        if len(c):
            fr = np.maximum(c * m // c.sum(), 1)
            fr[np.argmax(fr)] += m - fr.sum()
            tabs[f] = (np.concatenate([[0], np.cumsum(fr)[:-1]]), fr)
    ops += [(int(tabs[f][0][s]), int(tabs[f][1][s])) for f, s in zip(seq["val_feature"], seq["val_sym"])]
    order = np.random.default_rng(seed).permutation(len(ops))  # the real stream interleaves bits and values
    big_l = 1 << 31
    x, words, cost = big_l, 0, 0.0
    for i in order[::-1]:
        start, freq = ops[i]
        if x >= ((big_l >> prob_bits) << 32) * freq:
            words += 1
            x >>= 32
        x = (x // freq << prob_bits) + x % freq + start
        cost -= np.log2(freq / m)
    return 32 * (words + 2), cost


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--out", default="bench/results/rans_precision_sim.json")
    args = ap.parse_args()
    spec = verify_dl.DATASETS[0]
    x = toydata.make(spec, args.rows)
    sae = true_dictionary_sae(toydata.dictionary(spec)[0], spec.k)
    with torch.no_grad():
        codes = select_quantize(sae.pre_acts(torch.from_numpy(x)), k=spec.k, step=args.step)
    stats, _ = scan(x, sae, args.step)
    model = codec.build_model(stats)
    payload = 8 * sum(map(len, _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, args.rows, 0)))
    seq = verify_dl.symbol_sequence(codes, model, args.rows)
    ideal = verify_dl.ideal_bits(seq)["total"]
    n = len(seq["bits"]) + len(seq["val_feature"])
    print(f"{args.rows} rows, one stream, {n:,} symbols: DL estimate {stats.estimate_bits():,.0f} bits, "
          f"-log2 P of the coded symbols {ideal:,.0f}, native payload {payload:,} (+{payload - ideal:,.0f})")
    rows = []
    for pb in (31, 30, 28, 24):
        bits, cost = rans_bits(seq, pb)
        rows.append({"prob_bits": pb, "rans_bits": bits, "ideal_bits": cost, "loss_bits": bits - cost,
                     "loss_bits_per_symbol": (bits - cost) / n})
        print(f"  prob bits {pb}: rANS {bits:,} bits vs -log2 P {cost:,.0f}: loss {bits - cost:,.0f} bits "
              f"({(bits - cost) / n:.5f} bit/symbol)")
    res = {"bench": "rans_precision_sim", "date": datetime.date.today().isoformat(),
           "machine": f"{os.cpu_count()}-core {platform.machine()}, no GPU", "rows": args.rows, "step": args.step,
           "symbols": n, "estimate_bits": stats.estimate_bits(), "ideal_sequence_bits": ideal,
           "native_payload_bits": payload, "by_precision": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
