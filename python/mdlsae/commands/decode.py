"""``mdlsae decode``: reconstruct activations from a ``.mdl`` file and its SAE."""

from __future__ import annotations


import numpy as np
import torch
from tqdm.auto import tqdm

from . import add_device_flag, add_memory_flag, add_progress_flag, load_sae, show_progress
from ..codec.api import check_sae, decode_file
from ..codec.container import open_mdl
from ..budget import rows_for
from ..fileio import atomic_file


def add_parser(sub) -> None:
    p = sub.add_parser("decode", help="decode a .mdl file to reconstructed activations (.npy)")
    p.add_argument("file", metavar="FILE.mdl", help="a .mdl file, or the folder `encode --sharded` writes")
    p.add_argument("--sae", required=True, metavar="SAE_DIR", help="the SAE the file was encoded with")
    p.add_argument("-o", "--output", required=True, metavar="RECON.npy", help="float32 [N, d_in], written atomically")
    add_device_flag(p)
    add_memory_flag(p)
    add_progress_flag(p)
    p.set_defaults(run=run)


def run(args) -> int:
    sae = load_sae(args)
    with open_mdl(args.file) as f:
        check_sae(f, sae)
        n, d = f.n_rows, sae.d_in
        # reconstructed rows, float32, plus their codes: whole chunks where the budget allows
        step = rows_for(4 * d + 16 * max(1, f.model.counts()["active"].sum() // max(n, 1)))
        step = step // f.chunk_rows * f.chunk_rows or step
        bar = tqdm(total=n, unit="row", unit_scale=True, desc="decode",
                   disable=not (show_progress(args)))
        with atomic_file(args.output) as out, torch.no_grad():
            np.lib.format.write_array_header_1_0(out, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
            for start in range(0, n, step):
                codes = decode_file(f, start, min(n, start + step), sae.W_dec.device)
                out.write(codes.reconstruct(f.step, sae.W_dec, sae.b_dec).float().cpu().numpy().astype("<f4").tobytes())
                bar.update(codes.n_rows)
        bar.close()
    print(f"decoded {n:,} rows x {d} to {args.output}")
    return 0
