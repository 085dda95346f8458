"""Issue 3 measurements of the codec: does the real file agree with the DL estimate, and how does
it compare with zstd -19 and the naive bounds. (The coder's speed beside constriction, per
non-zero, is bench/coder_vs_constriction.py.)

Usage: python bench/verify_dl.py [--rows 120000] [--out bench/results/verify_dl.json] [--quick]

Part 1 (table per dataset, step and parents): toy data with ground-truth features, a TopK SAE
whose decoder is the true dictionary (encoder trained, decoder fixed), encoded to a real .mdl
file, decoded and checked identical to ``select_quantize``. Columns: DL estimate, payload,
model bits, file size, payload/estimate overhead, the ideal cost of the exact symbol sequence
the coder codes (which splits the overhead into the 28-bit probabilities and rANS losses), the
naive bound L0*(B + log2 D), the best zstd -19 over several serialisations of the same
quantized codes, and raw float16.

"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zstandard

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toydata  # noqa: E402

import mdlsae  # noqa: E402
from mdlsae import codec  # noqa: E402
from mdlsae.codec import reference as codec_reference  # noqa: E402
from mdlsae.measure.codes import SparseCodes  # noqa: E402
from mdlsae._native import _C  # noqa: E402
from mdlsae.codec.container import MdlFile  # noqa: E402
from mdlsae.studies.demo import true_dictionary_sae  # noqa: E402
from mdlsae.measure.kernels import select_quantize  # noqa: E402
from mdlsae.models.train import TrainConfig, train_sae  # noqa: E402

SCALE = float(codec_reference.SCALE)  # probabilities are integers out of 2^28

DATASETS = [
    toydata.ToySpec("toy d=64 D=256 L0~4", d=64, n_features=256, mean_active=4.0, k=5),
    toydata.ToySpec("toy d=128 D=1024 L0~4", d=128, n_features=1024, mean_active=4.0, k=5, exponent=0.7),
    toydata.ToySpec("tree d=64 D=256 (64 roots x 3 children)", d=64, n_features=256, mean_active=2.0, k=6,
                    children=(0.5, 0.3, 0.15)),
]


# ----------------------------------------------------------------------------------------------
# The exact symbol sequence our coder codes, from the plain Python reference encoder

def symbol_sequence(codes, model, chunk_rows: int) -> dict:
    """Gap symbols (their freq out of 2^28) and values (feature, symbol index) that
    encode_chunks codes for ``codes`` under ``model``, all chunks and streams concatenated
    (mdlsae.codec.reference, whose bytes the tests check against the native coder)."""
    counts = model.counts()
    gap_freq, vf, vs = [], [], []
    for r0 in range(0, codes.n_rows, chunk_rows):
        r1 = min(codes.n_rows, r0 + chunk_rows)
        lo, hi = codes.row_ptr[r0], codes.row_ptr[r1]
        part = SparseCodes(codes.row_ptr[r0:r1 + 1] - lo, codes.index[lo:hi], codes.q[lo:hi], codes.d_sae)
        for stream in codec_reference.stream_symbols(part, counts, codes.n_rows):
            for sym in stream:
                if sym[0] == "gap":
                    gap_freq.append(sym[2])
                else:
                    vf.append(sym[1])
                    vs.append(sym[2])
    return {"gap_freq": np.array(gap_freq, dtype=np.int64),
            "val_feature": np.array(vf, dtype=np.int64), "val_sym": np.array(vs, dtype=np.int64),
            "hist_ptr": counts["hist_ptr"], "hist_count": counts["hist_count"]}


def ideal_bits(s: dict) -> dict:
    """Cost of the sequence under its exact models: -log2 P summed (gap symbols at their 28-bit
    probabilities, values at the histogram's empirical probabilities)."""
    gap_bits = float(-np.log2(s["gap_freq"].astype(np.float64) / SCALE).sum())
    hp, hc = s["hist_ptr"], s["hist_count"].astype(np.float64)
    feat_of = np.repeat(np.arange(len(hp) - 1), np.diff(hp))
    tot = np.bincount(feat_of, weights=hc, minlength=len(hp) - 1)
    logp = np.log2(np.maximum(hc, 1)) - np.log2(np.maximum(tot[feat_of], 1))
    val_bits = float(-logp[hp[s["val_feature"]] + s["val_sym"]].sum())
    return {"gap_bits": gap_bits, "value_bits": val_bits, "total": gap_bits + val_bits}


# ----------------------------------------------------------------------------------------------
# zstd baselines on the same quantized codes

def varint_bytes(v: np.ndarray) -> np.ndarray:
    """LEB128 of non-negative ints, vectorised."""
    v = v.astype(np.uint64)
    nb = np.ones(len(v), dtype=np.int64)
    for s in range(7, 64, 7):
        nb += v >= (np.uint64(1) << np.uint64(s))
    out = np.zeros(int(nb.sum()), dtype=np.uint8)
    start = np.cumsum(nb) - nb
    for i in range(int(nb.max()) if len(nb) else 0):
        live = nb > i
        byte = (v[live] >> np.uint64(7 * i)) & np.uint64(0x7F)
        more = (nb[live] > i + 1).astype(np.uint64) << np.uint64(7)
        out[start[live] + i] = (byte | more).astype(np.uint8)
    return out


def layouts(codes) -> dict[str, bytes]:
    """Serialisations of the CSR codes (all lossless, decodable with d_sae and n_rows)."""
    idx_t = np.int16 if codes.d_sae <= 32767 else np.int32
    q_t = np.uint8 if codes.q.max(initial=0) < 256 else np.uint16
    per_row = np.diff(codes.row_ptr)
    cnt_t = np.uint8 if per_row.max(initial=0) < 256 else np.uint16
    out = {}
    pairs = np.empty(codes.nnz, dtype=[("i", np.int32), ("q", np.int32)])
    pairs["i"], pairs["q"] = codes.index, codes.q
    out["row-major int32 (index,q) pairs + row lengths"] = per_row.astype(cnt_t).tobytes() + pairs.tobytes()
    out["row-major planar: lengths | index int16 | q u8"] = (per_row.astype(cnt_t).tobytes()
                                                             + codes.index.astype(idx_t).tobytes()
                                                             + codes.q.astype(q_t).tobytes())
    first = np.zeros(codes.nnz, dtype=bool)
    first[codes.row_ptr[:-1][per_row > 0]] = True
    dIdx = np.where(first, codes.index, codes.index - np.concatenate([[0], codes.index[:-1]]))
    out["row-major planar, index deltas in row"] = (per_row.astype(cnt_t).tobytes() + dIdx.astype(idx_t).tobytes()
                                                    + codes.q.astype(q_t).tobytes())
    rows = codes.rows()
    o = np.lexsort((rows, codes.index))
    f_s, r_s, q_s = codes.index[o].astype(np.int64), rows[o], codes.q[o]
    counts = np.bincount(f_s, minlength=codes.d_sae)
    newf = np.ones(len(f_s), dtype=bool)
    newf[1:] = f_s[1:] != f_s[:-1]
    gaps = np.where(newf, r_s, r_s - np.concatenate([[0], r_s[:-1]]) - 1)
    out["feature-major: counts | row gaps varint | q u8"] = (varint_bytes(counts).tobytes() + varint_bytes(gaps).tobytes()
                                                             + q_s.astype(q_t).tobytes())
    out["feature-major: counts | row gaps u32 | q u8"] = (counts.astype(np.uint32).tobytes()
                                                          + gaps.astype(np.uint32).tobytes() + q_s.astype(q_t).tobytes())
    return out


def zstd_best(codes, level: int) -> dict:
    cctx = zstandard.ZstdCompressor(level=level)
    sizes = {name: 8 * len(cctx.compress(blob)) for name, blob in layouts(codes).items()}
    best = min(sizes, key=sizes.get)
    return {"best_layout": best, "best_bits": sizes[best], "all_bits": sizes}


# ----------------------------------------------------------------------------------------------

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=120_000)
    ap.add_argument("--train-rows", type=int, default=30_000)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--steps", default="0.05,0.1,0.2")
    ap.add_argument("--chunk-rows", type=int, default=None, help="default: the encoder's automatic size")
    ap.add_argument("--zstd-level", type=int, default=19)
    ap.add_argument("--datasets", default="0,1,2", help="indices into the built-in dataset list")
    ap.add_argument("--out", default="bench/results/verify_dl.json")
    args = ap.parse_args()
    steps = [float(s) for s in args.steps.split(",")]
    t_start = time.perf_counter()
    tmp_dir = tempfile.TemporaryDirectory(prefix="verify_dl_")
    tmp = tmp_dir.name
    table, failures = [], []
    hdr = (f"{'dataset':<40} {'step':>5} {'parents':<12} {'L0':>5} {'estimate':>11} {'ideal seq':>11} {'payload':>11} "
           f"{'over %':>7} {'model':>9} {'file bits':>11} {'naive':>11} {'zstd-19':>11} {'f16 raw':>12} {'ok':>3}")
    print("bits in total over all rows; 'ideal seq' = -log2 P of the exact symbols coded (estimate + 28-bit rounding)")
    print(hdr)
    print("-" * len(hdr))
    for di in (int(i) for i in args.datasets.split(",")):
        spec = DATASETS[di]
        t_ds = time.perf_counter()
        x = toydata.make(spec, args.rows)
        features, _ = toydata.dictionary(spec)
        sae = train_sae(x[:args.train_rows], TrainConfig(d_sae=spec.n_features, k=spec.k, epochs=args.epochs,
                                                           train_decoder=False),
                        init=true_dictionary_sae(features, spec.k))
        with torch.no_grad():
            pre = sae.pre_acts(torch.from_numpy(x))
        for step in steps:
            ref = select_quantize(pre, k=spec.k, step=step)
            z = zstd_best(ref, args.zstd_level)  # the same codes for every parents variant
            variants = [("flat", None)]
            if spec.children:
                variants += [("planted", spec.parents()), ("co-occur", toydata.cooccurrence_parents(ref))]
            for pname, parents in variants:
                path = os.path.join(tmp, "codes.mdl")
                info = codec.encode(x, sae, path, step, parents=parents, chunk_rows=args.chunk_rows)
                dec = codec.decode(path)
                same = dec.codes == ref
                with MdlFile(path) as f:
                    model = f.model
                seq = symbol_sequence(ref, model, info.chunk_rows)
                ideal = ideal_bits(seq)
                n = info.n_rows
                streams = info.n_chunks
                allowed = 1e-3 * info.estimate_bits + 64 * streams
                row = {"dataset": spec.name, "d_in": spec.d, "d_sae": spec.n_features, "k": spec.k, "step": step,
                       "parents": pname, "n_parented": int((parents >= 0).sum()) if parents is not None else 0,
                       "n_rows": n, "l0": info.l0, "n_streams": streams,
                       "estimate_bits": info.estimate_bits, "ideal_sequence_bits": ideal["total"],
                       "payload_bits": info.payload_bits,
                       "model_bits": info.model_bits, "file_bits": 8 * info.file_bytes,
                       "overhead_pct": 100 * info.overhead,
                       "rans_loss_bits": info.payload_bits - ideal["total"],
                       "within_design_bound": bool(info.payload_bits - info.estimate_bits <= allowed),
                       "naive_bits": info.naive_bits, "zstd19_bits": z["best_bits"], "zstd19_layout": z["best_layout"],
                       "zstd19_all_bits": z["all_bits"], "float16_bits": 16 * spec.d * n,
                       "decoded_identical": bool(same)}
                table.append(row)
                if not same:
                    failures.append(f"{spec.name} step {step} {pname}: decoded codes differ from select_quantize")
                print(f"{spec.name:<40} {step:>5g} {pname:<12} {info.l0:>5.2f} {info.estimate_bits:>11,.0f} "
                      f"{ideal['total']:>11,.0f} {info.payload_bits:>11,} {100 * info.overhead:>+7.3f} "
                      f"{info.model_bits:>9,} {8 * info.file_bytes:>11,} {info.naive_bits:>11,.0f} "
                      f"{z['best_bits']:>11,} {16 * spec.d * n:>12,} {'yes' if same else 'NO':>3}", flush=True)
        del x, pre
        print(f"  ({spec.name}: {time.perf_counter() - t_ds:.0f} s)", flush=True)
    print()
    print("per row (bits/row); 'round' = ideal seq - estimate (28-bit probabilities), 'coder' = payload - ideal seq "
          "(rANS loss + the flushed lane states), 'bound' = payload - estimate <= 0.1 % + 64 bits/stream")
    print(f"{'dataset':<40} {'step':>5} {'parents':<9} {'estimate':>9} {'round':>6} {'coder':>6} {'payload':>9} "
          f"{'bound':>5} {'file':>9} {'naive':>9} {'zstd-19':>9} {'f16':>6}  zstd best layout")
    for r in table:
        n = r["n_rows"]
        print(f"{r['dataset']:<40} {r['step']:>5g} {r['parents']:<9} {r['estimate_bits'] / n:>9.2f} "
              f"{(r['ideal_sequence_bits'] - r['estimate_bits']) / n:>6.3f} {r['rans_loss_bits'] / n:>6.3f} "
              f"{r['payload_bits'] / n:>9.2f} {'ok' if r['within_design_bound'] else 'OVER':>5} "
              f"{r['file_bits'] / n:>9.2f} {r['naive_bits'] / n:>9.2f} "
              f"{r['zstd19_bits'] / n:>9.2f} {r['float16_bits'] / n:>6.0f}  {r['zstd19_layout']}")
    over = [r for r in table if not r["within_design_bound"]]
    if over:
        print(f"NOTE: {len(over)} of {len(table)} files exceed DESIGN §3's payload bound "
              f"(worst {max(r['overhead_pct'] for r in over):+.3f} %); see bench/rans_precision_sim.py")
    result = {"bench": "verify_dl", "date": datetime.date.today().isoformat(),
              "machine": f"{os.cpu_count()}-core {platform.machine()}, no GPU", "cpu": platform.processor(),
              "python": platform.python_version(), "torch": torch.__version__, "mdlsae": mdlsae.__version__,
              "zstandard": zstandard.__version__, "threads": _C.num_threads(), "args": vars(args),
              "table": table, "failures": failures,
              "seconds": time.perf_counter() - t_start}
    tmp_dir.cleanup()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\nwrote {args.out} ({result['seconds']:.0f} s){'; FAILURES: ' + '; '.join(failures) if failures else ''}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
