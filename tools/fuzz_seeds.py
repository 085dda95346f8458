"""Seed corpora for the libFuzzer targets (csrc/fuzz/): real .mdl files of small toy SAEs (flat and
with parents, one and several streams per chunk, empty and always-on features) taken apart into
the targets' input layout (csrc/fuzz/fuzz_input.h).

    PYTHONPATH=python python3 tools/fuzz_seeds.py OUT_DIR   # writes OUT_DIR/{model,chunks}/
"""

from __future__ import annotations

import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from mdlsae.codec import encode
from mdlsae.codec.container import MdlFile
from mdlsae.data import make_toy
from mdlsae.models.sae import SAE, SAEConfig


def model_prefix(f: MdlFile) -> bytes:
    blob = f.model.pack()
    return struct.pack("<IQBI", f.d_sae, f.n_rows, int(f.meta["has_parents"]), len(blob)) + blob


def chunks_input(f: MdlFile, first: int, count: int) -> bytes:
    out = model_prefix(f) + struct.pack("<BB", f.meta["features_per_stream"], count)
    for i in range(first, first + count):
        p = f.read_chunk(i)
        out += struct.pack("<II", f.chunks[i].rows, len(p)) + p
    return out


def main(out: Path) -> None:
    (out / "model").mkdir(parents=True, exist_ok=True)
    (out / "chunks").mkdir(parents=True, exist_ok=True)
    n = 0
    with tempfile.TemporaryDirectory() as tmp:
        for seed, (d, d_sae, rows) in enumerate([(8, 24, 300), (16, 48, 700), (12, 96, 1500)]):
            x = torch.from_numpy(make_toy(n_rows=rows, d=d, n_features=d_sae, mean_active=3, seed=seed).x)
            x[:, 0] += 5.0  # pushes some latents on in every row
            sae = SAE.random(SAEConfig("topk", d_in=d, d_sae=d_sae, k=4), seed=seed)
            parents = np.full(d_sae, -1)
            parents[1::3] = np.arange(0, d_sae - 1, 3)
            for name, kw in {"flat": {}, "parents": {"parents": parents}, "streams": {"features_per_stream": 8}}.items():
                path = Path(tmp) / f"{seed}{name}.mdl"
                encode(x, sae, path, step=0.1, chunk_rows=256, **kw)
                with MdlFile(path) as f:
                    (out / "model" / f"{seed}_{name}").write_bytes(model_prefix(f))
                    for first, count in ((0, 1), (0, min(3, len(f.chunks))), (len(f.chunks) - 1, 1)):
                        (out / "chunks" / f"{seed}_{name}_{first}_{count}").write_bytes(chunks_input(f, first, count))
                n += 1
    print(f"seeds from {n} files in {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
