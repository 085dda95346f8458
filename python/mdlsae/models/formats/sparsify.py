"""EleutherAI sparsify SAEs (``cfg.json`` + ``sae.safetensors`` per hookpoint), read as its
``SparseCoder.encode`` computes them: TopK of ``relu(encoder(x − b_dec))``. Transcoders, skip
connections, ``groupmax`` (the max of each of k groups, not the k largest) and signed SAEs are
refused with what they are.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import MdlsaeError, expect
from ..sae import SAE
from .common import build, read_json, read_safetensors, take

WEIGHTS = "sae.safetensors"


def find_sparsify(path: Path) -> Path | None:
    if path.is_dir() and (path / WEIGHTS).is_file():
        return path
    subs = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / WEIGHTS).is_file()) if path.is_dir() else []
    if subs:
        raise MdlsaeError(f"{path} holds sparsify SAEs for several hookpoints; pick one: "
                          + ", ".join(str(path / s) for s in subs))
    return None


def read_sparsify(path: Path) -> SAE:
    cfg = read_json(path / "cfg.json")
    wpath = path / WEIGHTS
    w = read_safetensors(wpath)
    expect(not cfg.get("transcode", False), f"{path} is a sparsify transcoder (it predicts another site); "
                                            "mdlsae measures autoencoders that reconstruct their input")
    expect(not cfg.get("skip_connection", False) and "W_skip" not in w,
           f"{path} has a skip connection (W_skip), which mdlsae's SAE model lacks")
    expect(not cfg.get("signed", False), f"{path}: a signed sparsify SAE (latents of both signs); "
                                         "mdlsae reads non-negative TopK latents only")
    act = cfg.get("activation", "topk")
    expect(act == "topk", f"{path}: sparsify activation {act!r} (groupmax keeps the max of each of k groups, "
                          "not the k largest) is not supported; mdlsae reads topk")
    expect("k" in cfg, f"{path / 'cfg.json'} has no 'k'")
    enc_w, enc_b, W_dec, b_dec = take(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], wpath)
    weights = {"W_enc": enc_w.T, "b_enc": enc_b, "W_dec": W_dec, "b_dec": b_dec, **w}
    return build("topk", weights, wpath, k=int(cfg["k"]), extra={"source": "sparsify"})
