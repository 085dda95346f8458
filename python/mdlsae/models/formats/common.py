"""What every SAE reader shares: reading a JSON config or a tensor file with errors that name
the file, the exact folds that rewrite another library's forward pass as ours (DESIGN §2:
``pre = (x - b_dec) @ W_enc + b_enc``, then TopK, JumpReLU or ReLU), and building the SAE.

Each fold changes the parameters, never the function: the latents and the reconstruction of
the folded SAE are those of the source up to float rounding (the fixture tests check it).
"""

from __future__ import annotations

import json
import math
import mmap
from pathlib import Path

import numpy as np
import torch

from ...errors import MdlsaeError, expect
from ..sae import SAE, SAEConfig

Weights = dict[str, torch.Tensor]


def read_json(path: Path) -> dict:
    expect(path.is_file(), f"{path} does not exist")
    try:
        out = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MdlsaeError(f"{path} is not valid JSON: {e}") from None
    expect(isinstance(out, dict), f"{path} must hold a JSON object, got {type(out).__name__}")
    return out


_ST_DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
              "BOOL": torch.bool}


def _read_buffer(n: int) -> np.ndarray:
    """n writable bytes to read a file into: an anonymous memory map, which the kernel fills with
    zero pages only as the read reaches them. (numpy's own large arrays ask for huge pages, and
    under the common transparent-huge-page setting ``defrag=madvise`` each can stall in memory
    compaction: 0.10–0.33 s against 0.06 s for 150 MB of weights here; a bytearray is zeroed
    first.)"""
    if not n or not hasattr(mmap, "MAP_PRIVATE"):
        return np.empty(n, dtype=np.uint8)
    # private: a forked child's writes to the weights must not reach the parent's
    return np.frombuffer(mmap.mmap(-1, n, flags=mmap.MAP_PRIVATE), dtype=np.uint8)


def read_safetensors(path: Path) -> Weights:
    """The tensors of a .safetensors file as views of one buffer read from it. safetensors'
    own loader copies out of a memory map, holding every weight twice at the peak, which for
    a 1M-wide SAE is gigabytes; the format (a length, a JSON header, raw little-endian data)
    is read here directly, with every offset checked."""
    expect(path.is_file(), f"{path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else -1
        expect(0 < n <= size - 8, f"cannot read {path}: not a safetensors file (header length {n}, file {size} bytes)")
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MdlsaeError(f"cannot read {path}: damaged safetensors header ({e})") from None
        data = _read_buffer(size - 8 - n)
        expect(f.readinto(memoryview(data)) == len(data), f"cannot read {path}: file ended early")
    out: Weights = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (b, e) = _ST_DTYPES[info["dtype"]], [int(v) for v in info["shape"]], info["data_offsets"]
        except (KeyError, TypeError, ValueError) as err:
            raise MdlsaeError(f"cannot read {path}: tensor {name!r} has a bad header entry ({err})") from None
        count = math.prod(shape)
        expect(0 <= b <= e <= len(data) and e - b == count * dtype.itemsize,
               f"cannot read {path}: tensor {name!r} data [{b}, {e}) does not fit its shape {shape} or the file")
        t = torch.frombuffer(data, dtype=dtype, count=count, offset=b) if count else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(shape)
    return out


def read_torch(path: Path) -> Weights:
    """A pickled state dict, loaded without running code from the file."""
    expect(path.is_file(), f"{path} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise MdlsaeError(f"cannot read {path} as a torch state dict: {e}") from None
    expect(isinstance(sd, dict) and all(isinstance(v, torch.Tensor) for v in sd.values()),
           f"{path} does not hold a state dict of tensors")
    return sd


def take(weights: Weights, names: list[str], where: Path) -> list[torch.Tensor]:
    """Pop ``names`` from ``weights`` as float32 tensors (what is left over is refused later)."""
    missing = [n for n in names if n not in weights]
    expect(not missing, f"{where} lacks {', '.join(missing)} (found {', '.join(sorted(weights))})")
    return [weights.pop(n).detach().to(torch.float32) for n in names]


def scale_latents(w: Weights, c: torch.Tensor) -> None:
    """Latent i multiplied by ``c[i] > 0``: the encoder rows (and threshold) grow by c, the
    decoder rows shrink by c, so the reconstruction is unchanged. SAELens's
    ``rescale_acts_by_decoder_norm`` and dictionary_learning's ``normalize_decoder``."""
    expect(bool((c > 0).all()), "cannot fold a zero decoder row norm into the encoder")
    w["W_enc"] = w["W_enc"] * c
    w["b_enc"] = w["b_enc"] * c
    w["W_dec"] = w["W_dec"] / c[:, None]
    if "threshold" in w:
        w["threshold"] = w["threshold"] * c


def scale_inputs(w: Weights, s: float) -> None:
    """The source reads ``x·s`` and returns its output divided by s (SAELens's
    ``fold_activation_norm_scaling_factor``): ``W_enc·s``, ``W_dec/s``, ``b_dec/s``."""
    w["W_enc"] = w["W_enc"] * s
    w["W_dec"] = w["W_dec"] / s
    w["b_dec"] = w["b_dec"] / s


def gated_as_jumprelu(W_enc, b_gate, r_mag, b_mag) -> Weights:
    """A gated SAE ``[u + b_gate > 0] · relu(e^r·u + b_mag)`` with ``u = x' @ W_enc`` is exactly the
    JumpReLU ``relu(pre)·(pre > θ)`` with ``pre = x' @ (W_enc·e^r) + b_mag`` and
    ``θ = b_mag − e^r·b_gate`` (the gate opens where ``pre`` passes θ)."""
    scale = torch.exp(r_mag)
    return {"W_enc": W_enc * scale, "b_enc": b_mag, "threshold": b_mag - scale * b_gate}


def build(arch: str, w: Weights, where: Path, *, k: int | None = None, apply_b_dec_to_input: bool = True,
          normalize_activations: str = "none", extra: dict | None = None, parents=None) -> SAE:
    """Our SAE from the folded weights ``w`` (W_enc [d_in, d_sae], b_enc, W_dec [d_sae, d_in],
    b_dec, threshold for jumprelu; a tree's forest in ``parents``); any tensor left in ``w`` is
    refused by ``from_weights``."""
    expect(w.get("W_enc") is not None and w["W_enc"].ndim == 2,
           f"{where}: no 2-D encoder matrix (found {', '.join(sorted(w))})")
    d_in, d_sae = w["W_enc"].shape
    cfg = SAEConfig(arch, d_in=int(d_in), d_sae=int(d_sae), k=k, apply_b_dec_to_input=apply_b_dec_to_input,
                    normalize_activations=normalize_activations, extra=extra or {}, parents=parents)
    return SAE.from_weights(cfg, w, where=str(where))
