"""SAELens directories (``cfg.json`` + ``sae_weights.safetensors``), versions 4 to 6, read as
SAELens computes them and folded into our three architectures.

- ``standard`` → relu; ``topk`` (and pre-6 ``standard`` with ``activation_fn(_str) "topk"``) →
  topk; ``jumprelu`` → jumprelu; ``gated`` → jumprelu (exact, see ``common.gated_as_jumprelu``);
  ``batchtopk`` / ``matryoshka_batchtopk`` training checkpoints → jumprelu at their
  ``topk_threshold``, which is what SAELens's ``save_inference_model`` turns them into.
- ``rescale_acts_by_decoder_norm`` (latents carry the decoder row norms) and pre-6
  ``finetuning_scaling_factor`` / ``scaling_factor`` (the decoder reads ``f·s``) are folded.
- ``normalize_activations``: ``none``/``false`` as is; ``expected_average_only_in``/``true`` is no
  operation at inference in SAELens's ``load_from_disk`` either (a ``norm_scaling_factor`` in the
  config is folded; without one a warning says the inputs must be scaled as in training);
  ``constant_norm_rescale`` and ``layer_norm`` are applied per row.
- Transcoders, skip transcoders and ``abstopk`` (signed latents) are refused with what they are.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from ...errors import MdlsaeError, expect
from ..sae import CFG_NAME, WEIGHTS_NAME, SAE
from .common import build, gated_as_jumprelu, read_json, read_safetensors, scale_inputs, scale_latents, take

TRANSCODERS = ("transcoder", "skip_transcoder", "jumprelu_transcoder", "jumprelu_skip_transcoder")
BATCH_TOPK = ("batchtopk", "matryoshka_batchtopk")
KNOWN = ("standard", "relu", "topk", "jumprelu", "gated", "tree", *BATCH_TOPK)
# keys whose meaning is folded into the weights or into our config: never carried over
CONSUMED = {"architecture", "d_in", "d_sae", "k", "apply_b_dec_to_input", "normalize_activations",
            "activation_fn", "activation_fn_str", "activation_fn_kwargs", "rescale_acts_by_decoder_norm",
            "finetuning_scaling_factor", "norm_scaling_factor", "dtype", "device", "topk_threshold_lr",
            "matryoshka_widths", "use_matryoshka_aux_loss", "decoder_init_norm", "use_sparse_activations",
            "aux_loss_coefficient", "jumprelu_init_threshold", "jumprelu_bandwidth", "jumprelu_sparsity_loss_mode",
            "l0_coefficient", "l1_coefficient", "lp_norm", "signed", "transcode", "d_out", "parents"}


def is_saelens(path: Path) -> bool:
    return path.is_dir() and (path / CFG_NAME).is_file() and (path / WEIGHTS_NAME).is_file()


def _architecture(cfg: dict, where: Path) -> tuple[str, int | None]:
    """SAELens 6's architecture name and k, converting pre-6 configs as SAELens does."""
    arch = cfg.get("architecture") or "standard"
    act = cfg.get("activation_fn", cfg.get("activation_fn_str"))
    kwargs = cfg.get("activation_fn_kwargs") or {}
    if arch in TRANSCODERS or (cfg.get("d_out") not in (None, cfg.get("d_in"))):
        raise MdlsaeError(f"{where}: a SAELens {arch} (it reads one site and predicts another, d_out="
                          f"{cfg.get('d_out')}); mdlsae measures autoencoders that reconstruct their input")
    if arch == "abstopk":
        raise MdlsaeError(f"{where}: a SAELens abstopk SAE (it keeps the k largest |pre-activations| with "
                          "their sign); mdlsae codes non-negative latents (topk, jumprelu, relu, gated)")
    for flag, meaning in (("signed", "signed latents"), ("transcode", "a transcoder")):
        expect(not cfg.get(flag), f"{where}: cfg.json sets {flag}={cfg.get(flag)!r} ({meaning}), which "
                                  "mdlsae does not compute; refusing rather than giving different latents")
    if arch == "standard" and act == "topk":  # SAELens < 6 stored TopK this way
        arch = "topk"
    if arch in ("standard", "relu"):
        expect(act in (None, "relu"), f"{where}: cfg.json asks for activation function {act!r}; mdlsae "
                                      "reads relu, topk, jumprelu and gated SAEs")
        return "relu", None
    expect(arch in KNOWN, f"{where}: unsupported SAELens architecture {arch!r}; mdlsae reads "
                          f"{', '.join(KNOWN)} (transcoders and abstopk are refused)")
    k = cfg.get("k", kwargs.get("k"))
    expect(k is None or (type(k) in (int, float) and k == int(k) and k >= 1),
           f"{where}: cfg.json has k={k!r}, expected a positive integer")
    if arch == "topk":
        expect(k is not None, f"{where}: a topk SAE without k in cfg.json")
    return arch, (int(k) if k is not None and arch in ("topk", "tree") else None)


def _normalization(cfg: dict, w: dict, where: Path) -> str:
    norm = cfg.get("normalize_activations")
    if norm in (None, False, "none"):
        return "none"
    if norm in (True, "expected_average_only_in"):
        if cfg.get("norm_scaling_factor") is not None:
            scale_inputs(w, float(cfg["norm_scaling_factor"]))
        else:
            warnings.warn(f"{where}: normalize_activations={norm!r}: like SAELens's load_from_disk, mdlsae "
                          "applies no scaling, so the activations must already be scaled as in training "
                          "(x·√d_in / mean‖x‖); SAELens's from_pretrained folds that factor from its registry",
                          stacklevel=4)
        return "none"
    expect(norm in ("constant_norm_rescale", "layer_norm"),
           f"{where}: normalize_activations={norm!r} is not supported (mdlsae reads none, "
           "expected_average_only_in, constant_norm_rescale and layer_norm)")
    return norm


def read_saelens(path: Path) -> SAE:
    cfg = read_json(path / CFG_NAME)
    wpath = path / WEIGHTS_NAME
    arch, k = _architecture(cfg, path)
    for key in ("d_in", "d_sae"):
        expect(key in cfg, f"{path / CFG_NAME} has no {key!r}")
    raw = read_safetensors(wpath)
    w: dict[str, torch.Tensor] = {}
    if arch == "gated":
        W_enc, b_gate, r_mag, b_mag = take(raw, ["W_enc", "b_gate", "r_mag", "b_mag"], wpath)
        w.update(gated_as_jumprelu(W_enc, b_gate, r_mag, b_mag))
    else:
        w["W_enc"], w["b_enc"] = take(raw, ["W_enc", "b_enc"], wpath)
    w["W_dec"], w["b_dec"] = take(raw, ["W_dec", "b_dec"], wpath)
    if arch == "jumprelu" or (arch == "tree" and k is None):  # a tree without k selects by thresholds
        (w["threshold"],) = take(raw, ["threshold"], wpath)
    if cfg.get("rescale_acts_by_decoder_norm"):
        scale_latents(w, w["W_dec"].norm(dim=1))
    if arch in BATCH_TOPK:  # a training checkpoint: its inference rule is the running threshold
        (thr,) = take(raw, ["topk_threshold"], wpath)
        expect(thr.numel() == 1, f"{wpath}: topk_threshold must be a scalar, got shape {list(thr.shape)}")
        w["threshold"] = thr.reshape(()).expand(w["W_enc"].shape[1]).clone()
    for name in ("finetuning_scaling_factor", "scaling_factor"):  # pre-6: decode reads f·s
        if name in raw:
            (s,) = take(raw, [name], wpath)
            w["W_dec"] = w["W_dec"] * s[:, None]
    shape = [int(cfg["d_in"]), int(cfg["d_sae"])]
    expect(list(w["W_enc"].shape) == shape, f"{wpath}: W_enc has shape {list(w['W_enc'].shape)}, but cfg.json "
                                            f"says d_in={shape[0]}, d_sae={shape[1]}")
    norm = _normalization(cfg, w, path)
    w.update(raw)  # anything left is refused by name
    extra = {key: v for key, v in cfg.items() if key not in CONSUMED}
    if arch not in ("relu", "topk", "jumprelu", "tree"):
        extra["source_architecture"] = arch
    parents = None
    if arch == "tree":  # mdlsae's own: the forest is in cfg.json and (checked equal) in the weights
        expect(isinstance(cfg.get("parents"), list), f"{path / CFG_NAME}: a tree SAE without its forest "
                                                     "(a list 'parents', -1 for roots)")
        parents = np.asarray(cfg["parents"])
    return build(arch if arch in ("relu", "topk", "tree") else "jumprelu", w, wpath, k=k,
                 apply_b_dec_to_input=bool(cfg.get("apply_b_dec_to_input", True)),
                 normalize_activations=norm, extra=extra, parents=parents)
