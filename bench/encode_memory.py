"""Peak memory of encoding a large memory-mapped activation file (issue 3).

Writes N rows of toy activations (d=64, 256 true features, ~4 active) to a .npy file block by
block (the generator stays small), then runs ``mdlsae.codec.encode(path, sae, out, step)`` in
a child process under ``/usr/bin/time -v`` and reports its maximum resident set size, beside a
child that only imports mdlsae and loads the SAE (the fixed cost of the interpreter + torch),
and the same for the command line, ``mdlsae encode ACTS --sae DIR -o FILE.mdl --step STEP``.
The child also samples its anonymous and file-backed RSS every 20 ms: pages of the
memory-mapped input count in RSS while mapped, but they are page cache, not allocations. Then it checks decoded
row ranges against ``select_quantize``.

Usage: python bench/encode_memory.py [--rows 2000000] [--dtype float16] [--out bench/results/encode_memory.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import toydata  # noqa: E402

import mdlsae  # noqa: E402
from mdlsae import codec  # noqa: E402
from mdlsae.studies.demo import true_dictionary_sae  # noqa: E402
from mdlsae.measure.kernels import select_quantize  # noqa: E402
from mdlsae.models.sae import SAE  # noqa: E402

SPEC = toydata.ToySpec("toy d=64 D=256 L0~4", d=64, n_features=256, mean_active=4.0, k=5)

CHILD = r"""
import sys, time, json, threading
import mdlsae
from mdlsae import codec
from mdlsae.models.sae import SAE

def status():
    s = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
    return {k: int(s[k].split()[0]) for k in ("VmHWM", "RssAnon", "RssFile", "VmRSS") if k in s}

peak = {"RssAnon": 0, "RssFile": 0}
done = threading.Event()
def sample():  # peaks of the anonymous and file-backed parts, every 20 ms
    while not done.wait(0.02):
        st = status()
        for k in peak:
            peak[k] = max(peak[k], st.get(k, 0))
threading.Thread(target=sample, daemon=True).start()
sae = SAE.load(sys.argv[1])
info = None
t = time.perf_counter()
if sys.argv[2] != "-":
    info = codec.encode(sys.argv[2], sae, sys.argv[3], float(sys.argv[4]), chunk_rows=int(sys.argv[5]) or None)
dt = time.perf_counter() - t
done.set()
st = status()
print(json.dumps({"seconds": dt, "info": info.to_dict() if info else None, "VmHWM_kB": st["VmHWM"],
                  "peak_RssAnon_kB": peak["RssAnon"], "peak_RssFile_kB": peak["RssFile"],
                  "final_RssAnon_kB": st["RssAnon"], "final_RssFile_kB": st["RssFile"]}, default=str))
"""


CLI = "import sys; from mdlsae.cli import main; sys.exit(main(sys.argv[1:]))"


def write_npy(path: str, n_rows: int, dtype) -> float:
    t = time.perf_counter()
    a = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=(n_rows, SPEC.d))
    start = 0
    for block in toydata.blocks(SPEC, n_rows, block_rows=65536, dtype=dtype):
        a[start:start + len(block)] = block
        start += len(block)
    a.flush()
    del a
    return time.perf_counter() - t


def run_child(args: list[str], code: str = CHILD) -> dict:
    p = subprocess.run(["/usr/bin/time", "-v", sys.executable, "-c", code, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["max_rss_kB"] = int(m.group(1))
    out["wall"] = re.search(r"Elapsed \(wall clock\) time .*: (\S+)", p.stderr).group(1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--step", type=float, default=0.1)
    ap.add_argument("--chunk-rows", type=int, default=0, help="default 0: the encoder's automatic size")
    ap.add_argument("--dir", default=None, help="where to write the .npy and .mdl (default: a temp dir, removed)")
    ap.add_argument("--out", default="bench/results/encode_memory.json")
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(dir=args.dir, prefix="encode_memory_")
    d = Path(tmp.name)
    npy, mdl, sae_dir = d / "acts.npy", d / "acts.mdl", d / "sae"
    features, _ = toydata.dictionary(SPEC)
    sae = true_dictionary_sae(features, SPEC.k)  # encoder = decoder transpose, not trained
    sae.save(sae_dir)
    t_gen = write_npy(str(npy), args.rows, np.dtype(args.dtype))
    print(f"wrote {npy} ({npy.stat().st_size / 2**20:.0f} MiB, {args.rows:,} x {SPEC.d} {args.dtype}) in {t_gen:.1f} s")
    base = run_child([str(sae_dir), "-", "-", "0", "0"])
    enc = run_child([str(sae_dir), str(npy), str(mdl), str(args.step), str(args.chunk_rows)])
    info = enc["info"]
    cli = run_child(["encode", str(npy), "--sae", str(sae_dir), "-o", str(d / "cli.mdl"), "--step", str(args.step),
                     *(["--chunk-rows", str(args.chunk_rows)] if args.chunk_rows else []), "--json", "--no-progress"], CLI)
    # Spot-check decoded row ranges against the reference kernel.
    acts = np.load(npy, mmap_mode="r")
    sae = SAE.load(sae_dir)
    checks = []
    for a, b in [(0, 50_000), (args.rows // 2 - 7, args.rows // 2 + 40_000), (args.rows - 30_000, args.rows)]:
        with torch.no_grad():
            ref = select_quantize(sae.pre_acts(torch.from_numpy(np.array(acts[a:b], dtype=np.float32))),
                                  k=SPEC.k, step=args.step)
        checks.append({"rows": [a, b], "identical": bool(codec.decode(mdl, start=a, stop=b).codes == ref)})
    mib = 1024
    res = {"bench": "encode_memory", "date": datetime.date.today().isoformat(),
           "machine": f"{os.cpu_count()}-core {platform.machine()}, no GPU", "mdlsae": mdlsae.__version__,
           "torch": torch.__version__, "args": vars(args), "npy_bytes": npy.stat().st_size,
           "mdl_bytes": mdl.stat().st_size, "encode_seconds": enc["seconds"],
           "encode_max_rss_MiB": enc["max_rss_kB"] / mib, "baseline_max_rss_MiB": base["max_rss_kB"] / mib,
           "encode_peak_rss_anon_MiB": enc["peak_RssAnon_kB"] / mib,
           "encode_peak_rss_file_MiB": enc["peak_RssFile_kB"] / mib,
           "baseline_rss_anon_MiB": base["final_RssAnon_kB"] / mib,
           "baseline_rss_file_MiB": base["final_RssFile_kB"] / mib,
           "cli_max_rss_MiB": cli["max_rss_kB"] / mib, "cli_wall": cli["wall"],
           "cli_same_payload": cli["payload_bits"] == info["payload_bits"],
           "target_MiB": 2048, "under_target": max(enc["max_rss_kB"], cli["max_rss_kB"]) / mib < 2048,
           "payload_over_estimate_pct": 100 * info["payload_over_estimate"], "l0": info["l0"],
           "bits_per_row": info["bits_per_row"], "n_chunks": info["n_chunks"], "decode_checks": checks}
    print(f"encode: {enc['seconds']:.1f} s, max RSS {res['encode_max_rss_MiB']:.0f} MiB "
          f"(import + SAE only: {res['baseline_max_rss_MiB']:.0f} MiB); sampled peaks: anonymous "
          f"{res['encode_peak_rss_anon_MiB']:.0f} MiB (baseline {res['baseline_rss_anon_MiB']:.0f}), file-backed "
          f"{res['encode_peak_rss_file_MiB']:.0f} MiB (baseline {res['baseline_rss_file_MiB']:.0f}, input "
          f"{res['npy_bytes'] / 2**20:.0f} MiB); `mdlsae encode`: max RSS {res['cli_max_rss_MiB']:.0f} MiB, "
          f"{cli['wall']} wall, same payload: {res['cli_same_payload']}; "
          f"target < 2048 MiB: {'yes' if res['under_target'] else 'NO'}")
    print(f"file: {res['mdl_bytes']:,} bytes, {info['bits_per_row']:.2f} bits/row, L0 {info['l0']:.2f}, "
          f"payload {res['payload_over_estimate_pct']:+.3f} % vs estimate; decoded ranges identical: "
          f"{all(c['identical'] for c in checks)}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")
    tmp.cleanup()
    sys.exit(0 if res["under_target"] and all(c["identical"] for c in checks) else 1)


if __name__ == "__main__":
    main()
