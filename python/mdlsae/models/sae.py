"""Sparse autoencoders in torch, stored in the SAELens on-disk layout (our native format).

A directory holds ``cfg.json`` and ``sae_weights.safetensors`` with ``W_enc [d_in, d_sae]``,
``b_enc [d_sae]``, ``W_dec [d_sae, d_in]``, ``b_dec [d_in]`` and, for ``jumprelu``,
``threshold [d_sae]``. ``architecture`` is ``topk`` (with ``k``), ``jumprelu`` or ``relu`` (saved
as SAELens's ``standard``), so every directory written here loads in SAELens, or mdlsae's own
``tree`` (with a forest ``parents``, in ``cfg.json`` and as an int32 tensor in the weights
file, and either ``k`` or, without it, a ``threshold [d_sae]``; see :mod:`.tree`). Every other
format (SAELens's other architectures and versions, the Gemma/Llama/Qwen Scope releases,
dictionary_learning, sparsify) is folded exactly into these forms by its reader in this package
(:mod:`.formats`), or refused.

Forward pass (DESIGN §2): ``pre = (norm(x) - b_dec) @ W_enc + b_enc``; ``topk`` keeps the k
largest entries of a row then applies ReLU, ``jumprelu`` is ``relu(pre) * (pre > threshold)``,
``relu`` is ``relu(pre)``; ``tree`` keeps the k largest among the roots (or those above their
threshold), then below each kept latent its strongest child if positive (and above its
threshold), level by level (a child fires only with its parent);
``decode(z) = z @ W_dec + b_dec``. ``norm`` is the identity except for
SAELens's per-row ``constant_norm_rescale`` and ``layer_norm``, whose inverse needs each row's
statistics: such SAEs encode and decode here, but the codec refuses them (a file would have to
carry those statistics).
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
from safetensors.torch import save_file

from ..errors import expect
from ..fileio import atomic_dir
from .topk import topk_mask
from .tree import TreeRule, validate_parents

ARCHITECTURES = ("topk", "jumprelu", "relu", "tree")
WITH_K = ("topk", "tree")
NORMALIZATIONS = ("none", "constant_norm_rescale", "layer_norm")
CFG_NAME = "cfg.json"
WEIGHTS_NAME = "sae_weights.safetensors"


def _all_finite(t: torch.Tensor, block: int = 1 << 22) -> bool:
    """isfinite over slices: on a whole wide weight torch's temporaries would double its size."""
    flat = t.reshape(-1)
    return all(bool(torch.isfinite(flat[i:i + block]).all()) for i in range(0, flat.numel(), block))


@dataclass
class SAEConfig:
    architecture: str
    d_in: int
    d_sae: int
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    extra: dict[str, Any] = field(default_factory=dict)  # other cfg.json keys, kept on save
    parents: np.ndarray | None = None  # tree: int64 [d_sae], -1 for roots

    def __post_init__(self) -> None:
        expect(self.architecture in ARCHITECTURES,
               f"architecture must be one of {', '.join(ARCHITECTURES)}, got {self.architecture!r}")
        expect(int(self.d_in) > 0 and int(self.d_sae) > 0,
               f"d_in and d_sae must be positive, got d_in={self.d_in}, d_sae={self.d_sae}")
        expect(self.normalize_activations in NORMALIZATIONS,
               f"normalize_activations must be one of {', '.join(NORMALIZATIONS)}, "
               f"got {self.normalize_activations!r}")
        if self.architecture in WITH_K and not (self.architecture == "tree" and self.k is None):
            expect(self.k is not None and 1 <= int(self.k) <= int(self.d_sae),
                   f"{self.architecture} needs 1 <= k <= d_sae={self.d_sae}, got k={self.k}")
            self.k = int(self.k)
        expect((self.parents is not None) == (self.architecture == "tree"),
               f"a {self.architecture} SAE " + ("needs a forest (parents)" if self.architecture == "tree"
                                                else "has no forest of its own (parents)"))
        if self.parents is not None:
            self.parents = validate_parents(self.parents, int(self.d_sae))

    @property
    def thresholded(self) -> bool:
        """Whether the SAE selects by a per-latent threshold (jumprelu, and a tree without k)."""
        return self.architecture == "jumprelu" or (self.architecture == "tree" and self.k is None)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("extra", "parents")}
        if d["k"] is None:
            d.pop("k")
        if self.parents is not None:
            d["parents"] = self.parents.tolist()
        out = dict(self.extra)
        out.update(d)
        if out["architecture"] == "relu":  # SAELens's name for it: the directory stays SAELens-loadable
            out["architecture"] = "standard"
        out.setdefault("dtype", "float32")
        return out


class SAE(torch.nn.Module):
    """A sparse autoencoder with SAELens parameter names and shapes.

    >>> sae = SAE.random(SAEConfig("topk", d_in=8, d_sae=32, k=4), seed=0)
    >>> z = sae.encode(torch.randn(5, 8))
    >>> int((z > 0).sum(dim=1).max()) <= 4
    True
    """

    def __init__(self, cfg: SAEConfig, weights: dict[str, torch.Tensor] | None = None):
        """Zero weights, or ``weights`` (validated by :meth:`from_weights`) taken without a copy."""
        super().__init__()
        self.cfg = cfg
        for name, shape in self.shapes(cfg).items():
            setattr(self, name, torch.nn.Parameter(torch.zeros(shape) if weights is None else weights[name]))
        if not cfg.thresholded:
            self.register_parameter("threshold", None)
        self._tree: TreeRule | None = None  # built on first use, on the latents' device
        self._gemm_dtype: torch.dtype | None = None  # the encoder GEMM's (set_compute_dtype); None: W_enc's own
        self._gemm_cache: tuple | None = None  # (W_enc's device, storage, version), W_enc in that dtype

    COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

    def set_compute_dtype(self, name: str) -> "SAE":
        """Run the encoder GEMM in ``name`` (float32, bfloat16 or float16): activations and W_enc
        cast to it, the pre-activations produced in it (half the bytes per latent), the bias
        still added in float32. The codes can then differ from float32's where a latent's
        pre-activation rounds across a selection or quantization boundary (bench/dtype_codes.py
        measures how often); the decoder, the content hash and the file format do not change."""
        expect(name in self.COMPUTE_DTYPES, f"compute dtype must be one of {', '.join(self.COMPUTE_DTYPES)}, "
                                            f"got {name!r}")
        dt = self.COMPUTE_DTYPES[name]
        self._gemm_dtype, self._gemm_cache = dt, None
        return self

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.W_enc.dtype if self._gemm_dtype is None else self._gemm_dtype

    def _gemm_weight(self) -> torch.Tensor:
        """W_enc in the compute dtype: cast once, again only after the SAE moved or its weights changed."""
        w = self.W_enc
        if w.dtype == self.compute_dtype:
            return w
        key = (w.device, w.data_ptr(), w._version)
        if self._gemm_cache is None or self._gemm_cache[0] != key:
            self._gemm_cache = (key, w.detach().to(self._gemm_dtype))
        return self._gemm_cache[1]

    @staticmethod
    def shapes(cfg: SAEConfig) -> dict[str, tuple[int, ...]]:
        out = {"W_enc": (cfg.d_in, cfg.d_sae), "b_enc": (cfg.d_sae,), "W_dec": (cfg.d_sae, cfg.d_in),
               "b_dec": (cfg.d_in,)}
        if cfg.thresholded:
            out["threshold"] = (cfg.d_sae,)
        return out

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
    def from_weights(cls, cfg: SAEConfig, weights: dict[str, torch.Tensor], where: str = "SAE weights") -> "SAE":
        shapes = cls.shapes(cfg)
        missing = [k for k in shapes if k not in weights]
        expect(not missing, f"{where} lack {', '.join(missing)} (found {', '.join(sorted(weights))})")
        if cfg.parents is not None and "parents" in weights:  # the tree's forest, also in cfg.json
            weights = dict(weights)
            stored = weights.pop("parents").detach().cpu().numpy()
            expect(stored.shape == cfg.parents.shape and bool((stored == cfg.parents).all()),
                   f"{where}: the forest in the weights file (parents) differs from the one in cfg.json")
        # an unknown tensor changes what the SAE computes: refuse instead of ignoring it
        unknown = sorted(k for k in weights if k not in shapes)
        expect(not unknown, f"{where} hold {', '.join(unknown)}, which a {cfg.architecture} SAE of "
                            f"mdlsae does not use (expected {', '.join(shapes)}); refusing rather than "
                            "computing different latents")
        own = {}
        for name, shape in shapes.items():
            w = weights[name].detach()
            expect(tuple(w.shape) == shape, f"SAE weight {name} must have shape {list(shape)} for d_in={cfg.d_in}, "
                                            f"d_sae={cfg.d_sae}; got {list(w.shape)}")
            w = w.to(torch.float32).contiguous()  # no copy when it already is
            expect(_all_finite(w), f"SAE weight {name} contains NaN or Inf")
            own[name] = w
        return cls(cfg, own)

    @classmethod
    def load(cls, path: str | os.PathLike, device: str | torch.device = "cpu") -> "SAE":
        """Load an SAE: a SAELens directory (any version; ours is one), or a Gemma Scope,
        Gemma Scope 2, Llama Scope or Qwen Scope release folder or file. dictionary_learning
        and sparsify SAEs go through ``mdlsae import`` (:func:`mdlsae.models.formats.import_sae`)."""
        from .formats import read_direct  # the readers build SAEs: imported here, not at module load

        return read_direct(Path(path)).to(device)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``cfg.json`` + ``sae_weights.safetensors`` atomically (the directory appears
        complete or not at all)."""
        tensors = {n: p.detach().to("cpu", torch.float32).contiguous() for n, p in self.named_parameters()}
        if self.cfg.parents is not None:
            tensors["parents"] = torch.from_numpy(self.cfg.parents.astype(np.int32))
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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """SAELens's run-time input normalisation (identity unless per-row)."""
        norm = self.cfg.normalize_activations
        if norm == "constant_norm_rescale":
            return x * (self.cfg.d_in ** 0.5 / x.norm(dim=-1, keepdim=True))
        if norm == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            return x / (x.std(dim=-1, keepdim=True) + 1e-5)
        return x

    def denormalize(self, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Map a decoder output back to the scale of the rows ``x`` it was encoded from
        (SAELens's inverse: it multiplies by the std without the 1e-5)."""
        norm = self.cfg.normalize_activations
        if norm == "constant_norm_rescale":
            return y * (x.norm(dim=-1, keepdim=True) / self.cfg.d_in ** 0.5)
        if norm == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            return y * (x - mu).std(dim=-1, keepdim=True) + mu
        return y

    def expect_codable(self) -> None:
        """The codec reconstructs a row from its codes alone: refuse an SAE whose output also
        needs the row's own statistics."""
        norm = self.cfg.normalize_activations
        expect(norm == "none", f"this SAE normalises each input row (normalize_activations={norm!r}); "
                               "its reconstruction needs each row's statistics, which mdlsae's codec "
                               "does not store, so it cannot measure or code it. Normalise the "
                               "activations yourself and save the SAE with normalize_activations 'none'")

    def encoder_parts(self, x: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(x @ W_enc, bias)`` with ``pre = x @ W_enc + bias``: ``b_dec`` folded into the bias
        (``b_enc - b_dec @ W_enc``; equal to ``(x - b_dec) @ W_enc + b_enc`` up to float
        rounding). The fused kernels add the bias while they read each row, so the encoder
        costs one GEMM and no second pass over [rows, d_sae]. ``out`` (a [rows, d_sae] buffer
        from an earlier batch) receives the GEMM: a fresh buffer of that size costs ~10 % of
        the GEMM in page faults."""
        x = self.normalize(x)
        bias = self.b_enc - self.b_dec @ self.W_enc if self.cfg.apply_b_dec_to_input else self.b_enc
        w = self._gemm_weight()
        x = x.to(w.dtype)
        return (x @ w if out is None else torch.matmul(x, w, out=out)), bias

    def pre_acts(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activations, the same float32 values the fused kernels see (the bias added
        in place: one [rows, d_sae] buffer, not two)."""
        gemm, bias = self.encoder_parts(x)
        return gemm.add_(bias)

    def row_bytes(self) -> int:
        """Bytes per row of a batch's dense intermediates when encoding: the pre-activations
        (in the compute dtype) and the activation row (with its normalised copy)."""
        return self.compute_dtype.itemsize * self.cfg.d_sae + 4 * 2 * self.cfg.d_in

    def activation(self, pre: torch.Tensor) -> torch.Tensor:
        """Dense latents from pre-activations (the plain torch reference of the selection)."""
        arch = self.cfg.architecture
        if arch == "topk":
            return torch.relu(pre) * topk_mask(pre, self.cfg.k)
        if arch == "jumprelu":  # SAELens: ReLU before the threshold (matters for θ < 0)
            return torch.relu(pre) * (pre > self.threshold)
        if arch == "tree":
            return torch.relu(pre) * self.tree_rule(pre.device).mask(pre, self.cfg.k, threshold=self.threshold)
        return torch.relu(pre)

    def tree_rule(self, device) -> TreeRule:
        """The forest's index arrays on ``device`` (a tree SAE only)."""
        if self._tree is None or self._tree.roots.device != torch.device(device):
            self._tree = TreeRule(torch.from_numpy(self.cfg.parents)).to(device)
        return self._tree

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.pre_acts(x))

    def decode(self, z: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """``z @ W_dec + b_dec``; for an SAE that normalises each row, pass the rows ``x`` that
        ``z`` came from to get the output at their scale."""
        y = z @ self.W_dec + self.b_dec
        if self.cfg.normalize_activations == "none":
            return y
        expect(x is not None, "this SAE normalises each input row: decode(z, x) needs the rows x")
        return self.denormalize(y, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x), x)

    def selection(self) -> tuple[int, np.ndarray | None, np.ndarray | None]:
        """(k, threshold, parents) for the native kernel: k > 0 for TopK (over the roots of
        ``parents`` for a tree), else the per-feature threshold (None meaning 0, i.e. ReLU).
        Every codec path starts here, so this is where an SAE the codec cannot reconstruct is
        refused."""
        self.expect_codable()
        arch = self.cfg.architecture
        thr = self.threshold.detach().to("cpu", torch.float32).numpy() if self.cfg.thresholded else None
        if arch in WITH_K:
            return self.cfg.k or 0, thr, self.cfg.parents
        if arch == "jumprelu":
            return 0, thr, None
        return 0, None, None

    def content_hash(self) -> str:
        """SHA-256 over the architecture, k and the float32 weights: names the SAE in a file."""
        h = hashlib.sha256()
        h.update(json.dumps({"architecture": self.cfg.architecture, "k": self.cfg.k,
                             "apply_b_dec_to_input": self.cfg.apply_b_dec_to_input}).encode())
        if self.cfg.normalize_activations != "none":  # hashes of existing files stay unchanged
            h.update(self.cfg.normalize_activations.encode())
        if self.cfg.parents is not None:
            h.update(b"parents" + self.cfg.parents.astype("<i8").tobytes())
        for name, p in sorted(self.named_parameters()):
            t = p.detach().to("cpu", torch.float32).contiguous()
            h.update(name.encode())
            h.update(np.asarray(t.shape, dtype=np.int64).tobytes())
            h.update(memoryview(t.numpy()).cast("B"))  # no copy of a large weight
        return h.hexdigest()
