"""Read SAEs trained by other libraries into our SAELens-layout :class:`~mdlsae.sae.SAE`.

Each importer maps the source's parameters onto ``pre = (x - b_dec) @ W_enc + b_enc`` and our
selection rule so that the converted SAE gives exactly the latents of the source's own forward
pass (the tests check this against each source's formula):

- dictionary_learning (``ae.pt`` + ``config.json``): ``AutoEncoder`` (ReLU, input bias
  ``bias``), ``AutoEncoderTopK`` (TopK of ReLU), ``BatchTopKSAE`` (inference threshold →
  JumpReLU with that threshold on every latent), ``JumpReluAutoEncoder``
  (``relu(pre·(pre > θ))``, no input bias by default).
- EleutherAI sparsify (``cfg.json`` + ``sae.safetensors``): TopK of ``relu(encoder(x - b_dec))``.
- SAELens (``cfg.json`` + ``sae_weights.safetensors``): our native layout.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..errors import MdlsaeError, expect
from .sae import CFG_NAME, WEIGHTS_NAME, SAE, SAEConfig

FORMATS = ("dictionary_learning", "sparsify", "saelens")
DL_CLASSES = ("AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "JumpReluAutoEncoder")


def detect_format(path: Path) -> str:
    """Which library wrote the SAE at ``path`` (a directory, or dictionary_learning's ae.pt)."""
    if path.is_file() and path.suffix == ".pt":
        return "dictionary_learning"
    expect(path.is_dir(), f"SAE path {str(path)!r} does not exist")
    if (path / "ae.pt").is_file():
        return "dictionary_learning"
    if (path / "sae.safetensors").is_file():
        return "sparsify"
    if (path / WEIGHTS_NAME).is_file():
        return "saelens"
    subs = sorted(p.name for p in path.iterdir() if p.is_dir() and (p / "sae.safetensors").is_file())
    if subs:
        raise MdlsaeError(f"{path} holds sparsify SAEs for several hookpoints; pick one: "
                          + ", ".join(str(path / s) for s in subs))
    raise MdlsaeError(f"{path}: no ae.pt (dictionary_learning), sae.safetensors (sparsify) or "
                      f"{WEIGHTS_NAME} (SAELens) found")


def import_sae(path: str | os.PathLike, fmt: str = "auto") -> SAE:
    """Load the SAE at ``path`` written by ``fmt`` (one of :data:`FORMATS`, or ``auto``)."""
    path = Path(path)
    if fmt == "auto":
        fmt = detect_format(path)
    expect(fmt in FORMATS, f"format must be auto or one of {', '.join(FORMATS)}, got {fmt!r}")
    return {"dictionary_learning": from_dictionary_learning, "sparsify": from_sparsify,
            "saelens": SAE.load}[fmt](path)


def _read_json(path: Path) -> dict:
    expect(path.is_file(), f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise MdlsaeError(f"{path} is not valid JSON: {e}") from None


def _tensors(weights: dict, names: list[str], where: Path) -> list[torch.Tensor]:
    missing = [n for n in names if n not in weights]
    expect(not missing, f"{where} lacks {', '.join(missing)} (found {', '.join(sorted(weights))})")
    return [weights[n].detach().to(torch.float32) for n in names]


def _build(arch: str, W_enc, b_enc, W_dec, b_dec, k=None, threshold=None, apply_b_dec_to_input=True,
           extra: dict | None = None) -> SAE:
    d_in, d_sae = W_enc.shape
    cfg = SAEConfig(arch, d_in=int(d_in), d_sae=int(d_sae), k=k, apply_b_dec_to_input=apply_b_dec_to_input,
                    extra=extra or {})
    weights = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
    if threshold is not None:
        weights["threshold"] = threshold
    return SAE.from_weights(cfg, weights)


def from_dictionary_learning(path: Path) -> SAE:
    """dictionary_learning: ``ae.pt`` (a state dict) with ``config.json`` beside it."""
    ae = path if path.is_file() else path / "ae.pt"
    expect(ae.is_file(), f"{ae} does not exist")
    trainer = _read_json(ae.parent / "config.json").get("trainer", {})
    try:
        sd = torch.load(ae, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MdlsaeError(f"cannot read {ae}: {e}") from None
    expect(isinstance(sd, dict), f"{ae} does not hold a state dict")
    cls = trainer.get("dict_class")
    expect(cls in DL_CLASSES, f"{ae}: dictionary_learning class {cls!r} is not supported; "
                              f"mdlsae reads {', '.join(DL_CLASSES)}")
    expect(not bool(sd.get("normalize_to_sqrt_d", False)),
           f"{ae} rescales its inputs (normalize_to_sqrt_d); convert it with that scale folded in")
    extra = {"source": "dictionary_learning", "source_class": cls}
    if cls == "JumpReluAutoEncoder":
        W_enc, b_enc, W_dec, b_dec, thr = _tensors(sd, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], ae)
        # relu(pre·(pre > θ)) keeps pre exactly when pre > max(θ, 0)
        return _build("jumprelu", W_enc, b_enc, W_dec, b_dec, threshold=thr.clamp_min(0),
                      apply_b_dec_to_input=bool(trainer.get("apply_b_dec_to_input", False)), extra=extra)
    enc_w, enc_b, dec_w = _tensors(sd, ["encoder.weight", "encoder.bias", "decoder.weight"], ae)
    if cls == "AutoEncoder":
        (b_dec,) = _tensors(sd, ["bias"], ae)
        return _build("relu", enc_w.T, enc_b, dec_w.T, b_dec, extra=extra)
    (b_dec,) = _tensors(sd, ["b_dec"], ae)
    k = int(sd["k"]) if "k" in sd else trainer.get("k")
    expect(k is not None, f"{ae}: no k in the state dict or config.json")
    if cls == "AutoEncoderTopK":
        return _build("topk", enc_w.T, enc_b, dec_w.T, b_dec, k=int(k), extra=extra)
    (thr,) = _tensors(sd, ["threshold"], ae)
    expect(float(thr) >= 0, f"{ae}: the BatchTopK SAE has no inference threshold (threshold={float(thr)}); "
                            "it was saved before its threshold was estimated")
    return _build("jumprelu", enc_w.T, enc_b, dec_w.T, b_dec, threshold=thr.expand(enc_w.shape[0]).clone(),
                  extra=dict(extra, k=int(k)))


def from_sparsify(path: Path) -> SAE:
    """EleutherAI sparsify: ``cfg.json`` + ``sae.safetensors`` of one hookpoint."""
    from safetensors.torch import load_file

    cfg = _read_json(path / "cfg.json")
    wpath = path / "sae.safetensors"
    expect(wpath.is_file(), f"{wpath} does not exist")
    try:
        w = load_file(str(wpath))
    except Exception as e:
        raise MdlsaeError(f"cannot read {wpath}: {e}") from None
    expect(not cfg.get("transcode", False), f"{path} is a transcoder (it predicts another site); "
                                            "mdlsae measures autoencoders")
    expect(not cfg.get("skip_connection", False) and "W_skip" not in w,
           f"{path} has a skip connection, which mdlsae's SAE model lacks")
    expect(not cfg.get("signed", False), f"{path}: a signed sparsify SAE (latents of both signs); "
                                         "mdlsae reads non-negative TopK latents only")
    act = cfg.get("activation", "topk")
    expect(act == "topk", f"{path}: sparsify activation {act!r} is not supported (only topk)")
    expect("k" in cfg, f"{path / 'cfg.json'} has no 'k'")
    enc_w, enc_b, W_dec, b_dec = _tensors(w, ["encoder.weight", "encoder.bias", "W_dec", "b_dec"], wpath)
    return _build("topk", enc_w.T, enc_b, W_dec, b_dec, k=int(cfg["k"]), extra={"source": "sparsify"})
