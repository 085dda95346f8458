"""The large public SAE releases that do not use SAELens's directory layout, read the way
SAELens's own loaders for them compute (``sae_lens.loading.pretrained_sae_loaders``):

- Gemma Scope: ``params.npz`` (``W_enc [d_in, d_sae]``, ``W_dec``, ``b_enc``, ``b_dec``,
  ``threshold``): JumpReLU on x itself (no b_dec subtracted).
- Gemma Scope 2: ``params.safetensors`` with lower-case ``w_enc``, ``w_dec`` (+ ``config.json``):
  the same JumpReLU; its transcoders (``affine_skip_connection``, a separate output hook) are refused.
- Llama Scope: ``hyperparams.json`` + ``checkpoints/final.safetensors`` (``encoder.weight
  [d_sae, d_in]``…): JumpReLU at the scalar ``jump_relu_threshold·s`` on inputs scaled by
  ``s = √d_model / dataset_average_activation_norm.in``, folded into the weights so raw
  activations go in.
- Qwen Scope: ``layer<N>.sae.pt`` (``W_enc [d_sae, d_in]``, ``W_dec [d_in, d_sae]``): TopK with k
  from the repository name (``…-L0_<k>``), no b_dec subtracted.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from ...errors import MdlsaeError, expect
from ..sae import SAE
from .common import build, read_json, read_safetensors, read_torch, scale_inputs, take

GEMMA_SCOPE = "params.npz"
GEMMA_SCOPE_2 = "params.safetensors"
LLAMA_SCOPE = "hyperparams.json"
LLAMA_WEIGHTS = Path("checkpoints") / "final.safetensors"
QWEN_SUFFIX = ".sae.pt"


def find(path: Path) -> tuple[str, Path] | None:
    """(release, file) when ``path`` is one of these releases' files or the folder holding it."""
    if path.is_file():
        for name, kind in ((GEMMA_SCOPE, "gemma_scope"), (GEMMA_SCOPE_2, "gemma_scope_2"), (LLAMA_SCOPE, "llama_scope")):
            if path.name == name:
                return kind, path
        return ("qwen_scope", path) if path.name.endswith(QWEN_SUFFIX) else None
    if not path.is_dir():
        return None
    for name, kind in ((GEMMA_SCOPE, "gemma_scope"), (GEMMA_SCOPE_2, "gemma_scope_2"), (LLAMA_SCOPE, "llama_scope")):
        if (path / name).is_file():
            return kind, path / name
    qwen = sorted(path.glob("*" + QWEN_SUFFIX))
    if len(qwen) > 1:
        raise MdlsaeError(f"{path} holds several Qwen Scope SAEs; pick one: " + ", ".join(str(q) for q in qwen))
    return ("qwen_scope", qwen[0]) if qwen else None


def read_scope(kind: str, file: Path) -> SAE:
    return {"gemma_scope": _gemma_scope, "gemma_scope_2": _gemma_scope_2, "llama_scope": _llama_scope,
            "qwen_scope": _qwen_scope}[kind](file)


def _gemma_scope(file: Path) -> SAE:
    try:
        with np.load(file, allow_pickle=False) as z:
            raw = {k: torch.from_numpy(np.array(z[k], dtype=np.float32)) for k in z.files}
    except Exception as e:
        raise MdlsaeError(f"{file}: not a readable Gemma Scope params.npz ({e})") from None
    w = dict(zip(["W_enc", "b_enc", "W_dec", "b_dec", "threshold"],
                 take(raw, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], file)))
    w.update(raw)
    return build("jumprelu", w, file, apply_b_dec_to_input=False, extra={"source": "gemma-scope"})


def _gemma_scope_2(file: Path) -> SAE:
    cfg = read_json(file.parent / "config.json") if (file.parent / "config.json").is_file() else {}
    raw = read_safetensors(file)
    out_hook = cfg.get("hf_hook_point_out")
    if "affine_skip_connection" in raw or cfg.get("affine_connection") or out_hook not in (None, cfg.get("hf_hook_point_in")):
        raise MdlsaeError(f"{file}: a Gemma Scope 2 transcoder (it reads {cfg.get('hf_hook_point_in')} and predicts "
                          f"{out_hook}); mdlsae measures autoencoders that reconstruct their input")
    arch = cfg.get("architecture", "jump_relu")
    expect(arch == "jump_relu", f"{file}: Gemma Scope 2 architecture {arch!r}; mdlsae reads jump_relu")
    w = dict(zip(["W_enc", "b_enc", "W_dec", "b_dec", "threshold"],
                 take(raw, ["w_enc", "b_enc", "w_dec", "b_dec", "threshold"], file)))
    w.update(raw)
    extra = {"source": "gemma-scope-2", **{k: v for k, v in cfg.items() if k != "architecture"}}
    return build("jumprelu", w, file, apply_b_dec_to_input=False, extra=extra)


def _llama_scope(file: Path) -> SAE:
    hp = read_json(file)
    act = hp.get("act_fn")
    expect(act == "jumprelu", f"{file}: Llama Scope act_fn {act!r}; mdlsae reads the jumprelu releases")
    expect(hp.get("hook_point_out", hp.get("hook_point_in")) == hp.get("hook_point_in"),
           f"{file}: a Llama Scope transcoder (hook_point_in {hp.get('hook_point_in')!r}, hook_point_out "
           f"{hp.get('hook_point_out')!r}); mdlsae measures autoencoders that reconstruct their input")
    for key in ("d_model", "jump_relu_threshold"):
        expect(key in hp, f"{file} has no {key!r}")
    norm = (hp.get("dataset_average_activation_norm") or {}).get("in")
    expect(isinstance(norm, (int, float)) and norm > 0,
           f"{file}: dataset_average_activation_norm.in must be a positive number, got {norm!r}")
    wfile = file.parent / LLAMA_WEIGHTS
    raw = read_safetensors(wfile)
    enc_w, enc_b, dec_w, dec_b = take(raw, ["encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias"], wfile)
    s = float(hp["d_model"]) ** 0.5 / float(norm)
    w = {"W_enc": enc_w.T, "b_enc": enc_b, "W_dec": dec_w.T, "b_dec": dec_b,
         "threshold": torch.full((enc_w.shape[0],), float(hp["jump_relu_threshold"]) * s)}
    scale_inputs(w, s)
    w.update(raw)
    return build("jumprelu", w, wfile, apply_b_dec_to_input=False,
                 extra={"source": "llama-scope", "hook_name": hp.get("hook_point_in"), "norm_scaling_factor_folded": s})


def _qwen_scope(file: Path) -> SAE:
    ks = [m.group(1) for part in file.resolve().parts if (m := re.search(r"L0_(\d+)$", part))]
    expect(bool(ks), f"{file}: a Qwen Scope SAE takes k from its repository name (…-L0_<k>), and no folder "
                     "on this path has one; keep the file in its downloaded folder")
    raw = read_torch(file)
    enc_w, dec_w, enc_b, dec_b = take(raw, ["W_enc", "W_dec", "b_enc", "b_dec"], file)
    w = {"W_enc": enc_w.T, "b_enc": enc_b, "W_dec": dec_w.T, "b_dec": dec_b}
    w.update(raw)
    return build("topk", w, file, k=int(ks[-1]), apply_b_dec_to_input=False, extra={"source": "qwen-scope"})
