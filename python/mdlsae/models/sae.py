"""Sparse autoencoders in torch, stored in the SAELens on-disk layout (our native format).

A directory holds ``cfg.json`` and ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``,
``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` and, for ``jumprelu``,
``threshold [d_sae]``. ``architecture`` is ``topk`` (with ``k``), ``jumprelu`` or ``relu``;
SAELens's ``standard`` and older ``activation_fn_str`` configs load as SAELens reads them
(pre-6 TopK included); ``relu`` is saved as ``standard``, BatchTopK as ``jumprelu`` with its
inference threshold. Gemma Scope's ``params.npz`` loads directly. A config flag or weight tensor
that would change the latents and that this model does not compute is refused, never ignored.

Forward pass (DESIGN §2): ``pre = (x - b_dec) @ W_enc + b_enc``; ``topk`` keeps the k largest
entries of a row then applies ReLU, ``jumprelu`` is ``relu(pre) * (pre > threshold)``, ``relu`` is
``relu(pre)``; ``decode(z) = z @ W_dec + b_dec``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..errors import MdlsaeError, expect
from ..fileio import atomic_dir

ARCHITECTURES = ("topk", "jumprelu", "relu")
CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"
GEMMA_SCOPE_NAME = "params.npz"


def topk_mask(pre: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k largest entries per row; ties go to the lower feature index."""
    order = torch.sort(pre, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, order, True)


@dataclass
class SAEConfig:
    architecture: str
    d_in: int
    d_sae: int
    k: int | None = None
    apply_b_dec_to_input: bool = True
    extra: dict[str, Any] = field(default_factory=dict)  # other cfg.json keys, kept on save

    def __post_init__(self) -> None:
        expect(self.architecture in ARCHITECTURES,
               f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        expect(int(self.d_in) > 0 and int(self.d_sae) > 0,
               f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        if self.architecture == "topk":
            expect(self.k is not None and 1 <= int(self.k) <= int(self.d_sae),
                   f"topk needs 1 <= k <= d_sae={self.d_sae}, got k={self.k}")
            self.k = int(self.k)

    @classmethod
    def from_dict(cls, cfg: dict[str, Any]) -> "SAEConfig":
        cfg = dict(cfg)
        arch = cfg.pop("architecture", None)
        act = cfg.get("activation_fn_str", cfg.get("activation_fn"))
        kwargs = cfg.get("activation_fn_kwargs") or {}
        if arch in (None, "standard"):
            # SAELens < 6 stored TopK as "standard" with activation_fn(_str) "topk" (and < 5 wrote
            # no architecture at all); SAELens converts these itself when it loads them
            expect(act in (None, "relu", "topk"),
                   f"cfg.json asks for activation function {act!r}; mdlsae reads relu and topk SAEs")
            arch = "topk" if act == "topk" else "relu"
        if arch not in ARCHITECTURES:
            raise MdlsaeError(f"unsupported SAE architecture {arch!r}; mdlsae reads "
                              f"{', '.join(ARCHITECTURES)} (and SAELens 'standard')")
        k = cfg.pop("k", None)
        if k is None and arch == "topk":
            k = kwargs.get("k")
        for key in ("d_in", "d_sae"):
            expect(key in cfg, f"cfg.json has no {key!r}")
        for flag, meaning in (("rescale_acts_by_decoder_norm", "latents scaled by the decoder row norms"),
                              ("signed", "signed latents"), ("transcode", "a transcoder")):
            expect(not cfg.get(flag), f"cfg.json sets {flag}={cfg.get(flag)!r} ({meaning}); mdlsae's "
                                      "SAE model does not compute that, so it refuses rather than give "
                                      "different latents (fold it into the weights first)")
        norm = cfg.get("normalize_activations")
        if norm is False:  # SAELens 4 wrote a bool
            norm = None
        if norm not in (None, "none"):
            raise MdlsaeError(f"cfg.json asks for normalize_activations={norm!r}; mdlsae expects "
                              "activations already normalized (set it to 'none')")
        return cls(architecture=arch, d_in=int(cfg.pop("d_in")), d_sae=int(cfg.pop("d_sae")),
                   k=None if k is None else int(k),
                   apply_b_dec_to_input=bool(cfg.pop("apply_b_dec_to_input", True)), extra=cfg)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "extra"}
        if d["k"] is None:
            d.pop("k")
        out = dict(self.extra)
        out.update(d)
        if out["architecture"] == "relu":  # SAELens's name for it: the directory stays SAELens-loadable
            out["architecture"] = "standard"
        out.setdefault("dtype", "float32")
        out.setdefault("normalize_activations", "none")
        return out


class SAE(torch.nn.Module):
    """A sparse autoencoder with SAELens parameter names and shapes.

    >>> sae = SAE.random(SAEConfig("topk", d_in=8, d_sae=32, k=4), seed=0)
    >>> z = sae.encode(torch.randn(5, 8))
    >>> int((z > 0).sum(dim=1).max()) <= 4
    True
    """

    def __init__(self, cfg: SAEConfig):
        super().__init__()
        self.cfg = cfg
        d_in, d_sae = cfg.d_in, cfg.d_sae
        self.W_enc = torch.nn.Parameter(torch.zeros(d_in, d_sae))
        self.b_enc = torch.nn.Parameter(torch.zeros(d_sae))
        self.W_dec = torch.nn.Parameter(torch.zeros(d_sae, d_in))
        self.b_dec = torch.nn.Parameter(torch.zeros(d_in))
        if cfg.architecture == "jumprelu":
            self.threshold = torch.nn.Parameter(torch.zeros(d_sae))
        else:
            self.register_parameter("threshold", None)

    # ----------------------------------------------------------------- construction
    @classmethod
    def random(cls, cfg: SAEConfig, seed: int = 0) -> "SAE":
        """Unit-norm random decoder rows, encoder initialised as the decoder transpose."""
        g = torch.Generator().manual_seed(seed)
        sae = cls(cfg)
        with torch.no_grad():
            w = torch.randn(cfg.d_sae, cfg.d_in, generator=g)
            sae.W_dec.copy_(w / w.norm(dim=1, keepdim=True))
            sae.W_enc.copy_(sae.W_dec.T)
        return sae

    @classmethod
    def from_weights(cls, cfg: SAEConfig, weights: dict[str, torch.Tensor]) -> "SAE":
        sae = cls(cfg)
        own = dict(sae.named_parameters())
        missing = [k for k in own if k not in weights]
        expect(not missing, f"SAE weights lack {', '.join(missing)} (found {', '.join(sorted(weights))})")
        # an unknown tensor (e.g. SAELens 5's finetuning_scaling_factor) changes what the SAE
        # computes: refuse instead of ignoring it
        unknown = sorted(k for k in weights if k not in own)
        expect(not unknown, f"SAE weights hold {', '.join(unknown)}, which a {cfg.architecture} SAE of "
                            f"mdlsae does not use (expected {', '.join(own)}); refusing rather than "
                            "computing different latents")
        with torch.no_grad():
            for name, p in own.items():
                w = weights[name]
                expect(tuple(w.shape) == tuple(p.shape),
                       f"SAE weight {name} must have shape {list(p.shape)} for d_in={cfg.d_in}, "
                       f"d_sae={cfg.d_sae}; got {list(w.shape)}")
                expect(bool(torch.isfinite(w).all()), f"SAE weight {name} contains NaN or Inf")
                p.copy_(w.to(torch.float32))
        return sae

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SAE":
        """Load an SAE directory in the SAELens layout, or a Gemma Scope ``params.npz`` (the file
        or the directory holding it)."""
        path = Path(path)
        if path.name == GEMMA_SCOPE_NAME or (path.is_dir() and (path / GEMMA_SCOPE_NAME).is_file()
                                              and not (path / CFG_NAME).exists()):
            return cls._from_gemma_scope(path if path.name == GEMMA_SCOPE_NAME else path / GEMMA_SCOPE_NAME).to(device)
        expect(path.exists(), f"SAE directory {str(path)!r} does not exist")
        expect(path.is_dir(), f"{str(path)!r} is a file; an SAE is a directory (SAELens layout: {CFG_NAME} + "
                              f"{WEIGHTS_NAME}) or a Gemma Scope {GEMMA_SCOPE_NAME}")
        cfg_path, w_path = path / CFG_NAME, path / WEIGHTS_NAME
        other = next((lib for name, lib in (("ae.pt", "dictionary_learning"), ("sae.safetensors", "sparsify"))
                      if (path / name).is_file()), None)
        expect(other is None, f"{str(path)!r} looks like a {other} SAE; convert it first: "
                              f"mdlsae import {path} -o SAE_DIR")
        expect(cfg_path.is_file(), f"{str(path)!r} has no {CFG_NAME} (expected the SAELens layout)")
        expect(w_path.is_file(), f"{str(path)!r} has no {WEIGHTS_NAME} (expected the SAELens layout)")
        try:
            cfg = SAEConfig.from_dict(json.loads(cfg_path.read_text()))
        except json.JSONDecodeError as e:
            raise MdlsaeError(f"{cfg_path} is not valid JSON: {e}") from None
        try:
            weights = load_file(str(w_path))
        except Exception as e:  # safetensors raises its own error types
            raise MdlsaeError(f"cannot read {w_path}: {e}") from None
        return cls.from_weights(cfg, weights).to(device)

    @classmethod
    def _from_gemma_scope(cls, path: Path) -> "SAE":
        """Gemma Scope's release format: a JumpReLU SAE in ``params.npz`` (``W_enc [d_in, d_sae]``,
        ``W_dec``, ``b_enc``, ``b_dec``, ``threshold``) whose encoder reads x itself:
        ``relu(x @ W_enc + b_enc) * (pre > threshold)`` (no b_dec subtracted)."""
        expect(path.is_file(), f"{path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as z:
                weights = {k: torch.from_numpy(np.array(z[k], dtype=np.float32)) for k in z.files}
        except Exception as e:
            raise MdlsaeError(f"{path}: not a readable Gemma Scope params.npz ({e})") from None
        expect("W_enc" in weights and weights["W_enc"].ndim == 2,
               f"{path}: expected Gemma Scope keys W_enc, W_dec, b_enc, b_dec, threshold; found {', '.join(weights)}")
        d_in, d_sae = weights["W_enc"].shape
        cfg = SAEConfig("jumprelu", d_in=int(d_in), d_sae=int(d_sae), apply_b_dec_to_input=False,
                        extra={"source": "gemma-scope params.npz"})
        return cls.from_weights(cfg, weights)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` atomically (the directory appears
        complete or not at all)."""
        tensors = {n: p.detach().to("cpu", torch.float32).contiguous() for n, p in self.named_parameters()}
        with atomic_dir(path) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_NAME))
            (tmp / CFG_NAME).write_text(json.dumps(self.cfg.to_dict(), indent=2) + "\n")
        return Path(path)

    # ----------------------------------------------------------------- forward
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_sae(self) -> int:
        return self.cfg.d_sae

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        if self.cfg.apply_b_dec_to_input:
            x = x - self.b_dec
        return x @ self.W_enc + self.b_enc

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense latents from pre-activations (the plain torch reference of the selection)."""
        arch = self.cfg.architecture
        if arch == "topk":
            return torch.relu(pre) * topk_mask(pre, self.cfg.k)
        if arch == "jumprelu":  # SAELens: ReLU before the threshold (matters for θ < 0)
            return torch.relu(pre) * (pre > self.threshold)
        return torch.relu(pre)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_acts(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.W_dec + self.b_dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def selection(self) -> tuple[int, np.ndarray | None]:
        """(k, threshold) for the native kernel: k > 0 for TopK, else the per-feature threshold
        (None meaning 0, i.e. ReLU)."""
        if self.cfg.architecture == "topk":
            return self.cfg.k, None
        if self.cfg.architecture == "jumprelu":
            return 0, self.threshold.detach().to("cpu", torch.float32).numpy()
        return 0, None

    def content_hash(self) -> str:
        """SHA-256 over the architecture, k and the float32 weights: names the SAE in a file."""
        h = hashlib.sha256()
        h.update(json.dumps({"architecture": self.cfg.architecture, "k": self.cfg.k,
                             "apply_b_dec_to_input": self.cfg.apply_b_dec_to_input}).encode())
        for name, p in sorted(self.named_parameters()):
            t = p.detach().to("cpu", torch.float32).contiguous()
            h.update(name.encode())
            h.update(np.asarray(t.shape, dtype=np.int64).tobytes())
            h.update(t.numpy().tobytes())
        return h.hexdigest()
