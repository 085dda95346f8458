"""The GPU path end to end on a lent GPU (issue 16), side by side in one run, figures as JSON with
the device and the date:

1. ``identity``: GPU and CPU ``.mdl`` files of the same random rows are byte-identical (payloads
   and model tables; an SAE whose GEMM is exact in float32 on both, see
   tests/test_stream_coder.py), for topk, jumprelu and relu SAEs, several chunks and streams.
2. ``coder``: the GPU rANS coder against the CPU chunk coder (all host threads) on the codes of
   the end-to-end run: bytes identical, codes decoded identical, non-zeros per second of each
   (encode and decode; the GPU's from and to device memory).
3. ``encode``: ``mdlsae.codec.encode`` of N random rows (float32 on the host) with a random
   bfloat16 TopK SAE on the GPU (GEMM, fused select kernel, histograms, GPU coder; the CPU's
   part is the framing and the code store), in tokens per second, beside the GEMM alone on rows
   already on the device and the GEMM with the rows' copy to it.
Medians of --repeats runs. The fused kernel against the torch composite is
bench_cuda_select_quantize.py (gpu_check.sh runs both).

Usage: python bench/gpu_check.py [--rows 1048576] [--out bench/results/gpu_check.json]
       python bench/gpu_check.py --device cpu --rows 20000 --d-sae 2048   (a dry run of the script here:
       the host build of the GPU coder in place of the GPU's)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import mdlsae  # noqa: E402
from mdlsae._native import _C  # noqa: E402
from mdlsae.codec import MdlFile, encode  # noqa: E402
from mdlsae.codec.api import build_model  # noqa: E402
from mdlsae.codec.streams import StreamCoder  # noqa: E402
from mdlsae.data import make_toy  # noqa: E402
from mdlsae.measure.codes import SparseCodes  # noqa: E402
from mdlsae.measure.entropy import FeatureStats  # noqa: E402
from mdlsae.measure.kernels import Histogram, select_quantize  # noqa: E402
from mdlsae.models.sae import SAE, SAEConfig  # noqa: E402


DEVICE = "cuda"


def sync() -> None:
    if DEVICE != "cpu":
        torch.cuda.synchronize()


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    ts = []
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def file_parts(path):
    with MdlFile(path) as f:
        return f.model.pack(), [f.read_chunk(i) for i in range(len(f.chunks))]


def identity(tmp: Path) -> dict:
    from test_stream_coder import exact_rows, exact_sae

    toy = make_toy(n_rows=20000, d=16, n_features=48, mean_active=3, seed=3)
    out = {}
    for arch in ("topk", "jumprelu", "relu"):
        sae, x = exact_sae(arch), exact_rows(toy)
        encode(x, sae, tmp / "cpu.mdl", step=0.05, chunk_rows=3000, features_per_stream=5)
        encode(x, sae.to(DEVICE), tmp / "gpu.mdl", step=0.05, chunk_rows=3000, features_per_stream=5)
        out[arch] = file_parts(tmp / "cpu.mdl") == file_parts(tmp / "gpu.mdl")
    return out


def codes_on_gpu(sae: SAE, x: torch.Tensor, k: int, step: float, batch: int):
    """The SAE's codes of x (computed on the GPU) and their statistics."""
    hist, parts = Histogram(sae.d_sae), []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch):
            gemm, bias = sae.encoder_parts(x[s:s + batch].to(DEVICE, sae.W_enc.dtype))
            parts.append(select_quantize(gemm, k=k, step=step, hist=hist, bias=bias))
    codes = SparseCodes.concat(parts, sae.d_sae)
    ptr, q, count = hist.to_csr()
    return codes, FeatureStats(codes.n_rows, hist.active_counts(), ptr, q, count)


def coder(codes: SparseCodes, stats: FeatureStats, chunk_rows: int, fps: int, repeats: int) -> dict:
    model = build_model(stats)
    gpu = StreamCoder(model, DEVICE, fps)
    dev = [torch.from_numpy(a).to(DEVICE) for a in (codes.row_ptr, codes.index, codes.q)]
    cpu_bytes = _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, chunk_rows, fps)
    gpu_bytes = gpu.encode(*dev, chunk_rows=chunk_rows)
    rows = [min(chunk_rows, codes.n_rows - i * chunk_rows) for i in range(len(cpu_bytes))]
    back = SparseCodes(*(t.cpu().numpy() for t in gpu.decode(cpu_bytes, rows)), codes.d_sae)
    t_gpu = median_time(lambda: gpu.encode(*dev, chunk_rows=chunk_rows), repeats)
    t_cpu = median_time(lambda: _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, chunk_rows, fps),
                        repeats)
    t_gpu_dec = median_time(lambda: gpu.decode(cpu_bytes, rows), repeats)
    t_cpu_dec = median_time(lambda: _C.decode_chunks(model, cpu_bytes, rows, fps), repeats)
    mnnz = lambda t: round(codes.nnz / t / 1e6, 1)  # noqa: E731
    return {"nnz": codes.nnz, "streams": gpu.n_streams * len(cpu_bytes), "identical": gpu_bytes == cpu_bytes,
            "decoded_identical": back == codes, "payload_bytes": sum(map(len, cpu_bytes)),
            "cpu_threads": _C.num_threads(), "gpu_enc_s": round(t_gpu, 4), "cpu_enc_s": round(t_cpu, 4),
            "gpu_dec_s": round(t_gpu_dec, 4), "cpu_dec_s": round(t_cpu_dec, 4),
            "gpu_enc_Mnnz_s": mnnz(t_gpu), "cpu_enc_Mnnz_s": mnnz(t_cpu), "gpu_dec_Mnnz_s": mnnz(t_gpu_dec),
            "cpu_dec_Mnnz_s": mnnz(t_cpu_dec)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1 << 20)
    ap.add_argument("--d-in", type=int, default=768)
    ap.add_argument("--d-sae", type=int, default=24576)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--step", type=float, default=0.05)
    ap.add_argument("--chunk-rows", type=int, default=16384)
    ap.add_argument("--features-per-stream", type=int, default=256)
    ap.add_argument("--memory", default="32G", help="the encode's byte budget (MDLSAE_MEMORY)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/gpu_check.json")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a dry run of this script")
    args = ap.parse_args()
    global DEVICE
    DEVICE = args.device
    info = mdlsae.build_info()
    if DEVICE != "cpu" and not (mdlsae.cuda_available() and torch.cuda.is_available()):
        sys.exit(f"gpu_check: needs a CUDA device (mdlsae CUDA build: {info['cuda_compiled']}, torch CUDA: "
                 f"{torch.cuda.is_available()})")
    os.environ["MDLSAE_MEMORY"] = args.memory
    res = {"device": torch.cuda.get_device_name() if DEVICE != "cpu" else "cpu (dry run)", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__, "torch_cuda": torch.version.cuda, "mdlsae_cuda": info["cuda_version"],
           "args": vars(args)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res["identity"] = identity(tmp)
        print(json.dumps({"identity": res["identity"]}), flush=True)

        g = torch.Generator().manual_seed(0)
        x = torch.randn(args.rows, args.d_in, generator=g)
        sae = SAE.random(SAEConfig("topk", d_in=args.d_in, d_sae=args.d_sae, k=args.k), seed=0)
        sae = sae.to(DEVICE, torch.bfloat16)
        batch = min(65536, args.rows)
        codes, stats = codes_on_gpu(sae, x, args.k, args.step, batch)
        res["coder"] = coder(codes, stats, args.chunk_rows, args.features_per_stream, args.repeats)
        print(json.dumps({"coder": res["coder"]}), flush=True)
        del codes, stats

        x_dev = x[:batch].to(DEVICE, torch.bfloat16)
        t_gemm = median_time(lambda: [x_dev @ sae.W_enc for _ in range(0, args.rows, batch)], args.repeats)
        t_copy_gemm = median_time(lambda: [x[s:s + batch].to(DEVICE, torch.bfloat16) @ sae.W_enc
                                           for s in range(0, args.rows, batch)], args.repeats)
        path = tmp / "e2e.mdl"
        t_enc = median_time(lambda: encode(x, sae, path, step=args.step, chunk_rows=args.chunk_rows,
                                           features_per_stream=args.features_per_stream), args.repeats)
        with MdlFile(path) as f:
            file_bytes = f.file_bytes
        res["encode"] = {"rows": args.rows, "dtype": "bfloat16 SAE, float32 rows on the host",
                         "encode_s": round(t_enc, 3), "tokens_per_s": round(args.rows / t_enc),
                         "gemm_only_s": round(t_gemm, 4), "gemm_tokens_per_s": round(args.rows / t_gemm),
                         "copy_and_gemm_s": round(t_copy_gemm, 4), "encode_over_gemm": round(t_enc / t_gemm, 2),
                         "file_bytes": file_bytes, "bits_per_row": round(8 * file_bytes / args.rows, 2)}
        print(json.dumps({"encode": res["encode"]}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
