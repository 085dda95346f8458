"""dictionary_learning SAEs (``ae.pt`` state dicts; ``config.json`` beside them, or in the parent
folder for ``checkpoints/ae_<step>.pt``), read as its ``<Class>.from_pretrained`` /
``utils.load_dictionary`` then ``encode`` compute them:

- ``AutoEncoder``: ``relu(encoder(x − bias))``; ``from_pretrained`` first normalises the decoder
  columns, which multiplies latent i by ‖decoder column i‖ (folded the same way here).
- ``AutoEncoderTopK``: TopK of ``relu(encoder(x − b_dec))``.
- ``BatchTopKSAE``, ``MatryoshkaBatchTopKSAE``: ``pre·(pre > threshold)`` with ``pre`` the ReLU
  and a learned scalar threshold → JumpReLU (all Matryoshka groups are active at inference).
- ``JumpReluAutoEncoder``: ``relu(pre·(pre > θ))`` with ``pre = x @ W_enc + b_enc`` → JumpReLU at
  ``max(θ, 0)``.
- ``GatedAutoEncoder``: gate and magnitude paths → JumpReLU (``common.gated_as_jumprelu``).

Without a ``config.json`` the class follows from the state-dict keys, except that
``AutoEncoderTopK`` and ``BatchTopKSAE`` store the same keys: then ``dl_class`` must say which.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import expect
from ..sae import SAE
from .common import build, gated_as_jumprelu, read_json, read_torch, scale_latents, take

CLASSES = ("AutoEncoder", "AutoEncoderTopK", "BatchTopKSAE", "MatryoshkaBatchTopKSAE", "JumpReluAutoEncoder",
           "GatedAutoEncoder")
KEYS = {  # state-dict keys of each class, as its own save writes them
    "AutoEncoder": {"bias", "encoder.weight", "encoder.bias", "decoder.weight"},
    "AutoEncoderTopK": {"b_dec", "k", "threshold", "encoder.weight", "encoder.bias", "decoder.weight"},
    "MatryoshkaBatchTopKSAE": {"W_enc", "b_enc", "W_dec", "b_dec", "k", "threshold", "group_sizes"},
    "JumpReluAutoEncoder": {"W_enc", "b_enc", "W_dec", "b_dec", "threshold"},
    "GatedAutoEncoder": {"decoder_bias", "r_mag", "gate_bias", "mag_bias", "encoder.weight", "decoder.weight"},
}


def find_ae(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".pt":
        return path
    return path / "ae.pt" if (path / "ae.pt").is_file() else None


def _trainer_config(ae: Path) -> dict | None:
    for folder in (ae.parent, ae.parent.parent) if ae.parent.name == "checkpoints" else (ae.parent,):
        if (folder / "config.json").is_file():
            return read_json(folder / "config.json").get("trainer", {})
    return None


def _class_from_keys(sd: dict, ae: Path, dl_class: str | None) -> str:
    keys = set(sd)
    matches = [c for c, ks in KEYS.items() if ks == keys]
    if matches == ["AutoEncoderTopK"]:
        expect(dl_class in ("AutoEncoderTopK", "BatchTopKSAE"),
               f"{ae} has no config.json and its keys fit both AutoEncoderTopK (TopK per row) and "
               "BatchTopKSAE (a learned threshold), which give different latents; say which: "
               "mdlsae import --class AutoEncoderTopK|BatchTopKSAE")
        return dl_class
    expect(bool(matches), f"{ae} has no config.json, and its keys ({', '.join(sorted(keys))}) match no "
                          f"dictionary_learning class mdlsae reads ({', '.join(CLASSES)})")
    return matches[0]


def read_dictionary_learning(ae: Path, dl_class: str | None = None) -> SAE:
    sd = read_torch(ae)
    trainer = _trainer_config(ae)
    cls = dl_class or (trainer or {}).get("dict_class") or _class_from_keys(sd, ae, dl_class)
    expect(cls in CLASSES, f"{ae}: dictionary_learning class {cls!r} is not supported; "
                           f"mdlsae reads {', '.join(CLASSES)}")
    trainer = trainer or {}
    expect(not bool(sd.pop("normalize_to_sqrt_d", False)),
           f"{ae} rescales its inputs (normalize_to_sqrt_d), which mdlsae does not read")
    extra = {"source": "dictionary_learning", "source_class": cls}
    for key in ("layer", "lm_name", "submodule_name"):
        if trainer.get(key) is not None:
            extra[key] = trainer[key]
    b_dec_in = True
    if cls in ("JumpReluAutoEncoder", "MatryoshkaBatchTopKSAE"):
        W_enc, b_enc, W_dec, b_dec, thr = take(sd, ["W_enc", "b_enc", "W_dec", "b_dec", "threshold"], ae)
        w = {"W_enc": W_enc, "b_enc": b_enc, "W_dec": W_dec, "b_dec": b_dec}
        b_dec_in = cls != "JumpReluAutoEncoder" or bool(trainer.get("apply_b_dec_to_input", False))
    elif cls == "GatedAutoEncoder":
        enc_w, dec_w, b_dec, r_mag, gate_b, mag_b = take(
            sd, ["encoder.weight", "decoder.weight", "decoder_bias", "r_mag", "gate_bias", "mag_bias"], ae)
        w = dict(gated_as_jumprelu(enc_w.T, gate_b, r_mag, mag_b), W_dec=dec_w.T, b_dec=b_dec)
    else:
        enc_w, enc_b, dec_w = take(sd, ["encoder.weight", "encoder.bias", "decoder.weight"], ae)
        (b_dec,) = take(sd, ["bias" if cls == "AutoEncoder" else "b_dec"], ae)
        w = {"W_enc": enc_w.T, "b_enc": enc_b, "W_dec": dec_w.T, "b_dec": b_dec}
        if cls == "BatchTopKSAE":
            (thr,) = take(sd, ["threshold"], ae)
        elif cls == "AutoEncoderTopK":
            sd.pop("threshold", None)  # used only by encode(use_threshold=True), not the default
    k = int(sd.pop("k")) if "k" in sd else None
    sd.pop("group_sizes", None)  # Matryoshka groups: all active at inference
    w.update(sd)  # anything left is refused by name
    if cls == "AutoEncoder":
        scale_latents(w, w["W_dec"].norm(dim=1))
        return build("relu", w, ae, extra=extra)
    if cls == "AutoEncoderTopK":
        return build("topk", w, ae, k=k or trainer.get("k"), extra=extra)
    if cls == "GatedAutoEncoder":
        return build("jumprelu", w, ae, extra=extra)
    if cls != "JumpReluAutoEncoder":
        expect(thr.numel() == 1 and float(thr) >= 0,
               f"{ae}: the {cls} has no inference threshold (threshold={thr.flatten()[:1].tolist()}); "
               "it was saved before its threshold was estimated")
    if k is not None:  # the training k of a BatchTopK / Matryoshka SAE, kept for reference
        extra["k"] = k
    # relu(pre)·(pre > θ) keeps pre exactly where pre > max(θ, 0)
    w["threshold"] = thr.clamp_min(0).expand(w["W_enc"].shape[1]).clone()
    return build("jumprelu", w, ae, apply_b_dec_to_input=b_dec_in, extra=extra)
