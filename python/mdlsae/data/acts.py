"""Activation datasets: arrays of activation rows [N, d_in] read in row batches so that files
larger than RAM stream in bounded memory. An array of more dimensions ([batch, seq, d_in], as
caches of token activations are) is read as its rows over all leading dimensions, in C order.

Sources, chosen by suffix:
- ``.npy`` (float32, float16 or float64; memory-mapped),
- ``.safetensors`` (float32, float16 or bfloat16; read slice by slice): the one tensor, or the
  one floating-point tensor beside integer ones (token ids), or the tensor named by ``key``,
- ``.npz`` (a member array: the only one, or ``key``; read into memory, as zip members cannot
  be memory-mapped),
- ``.pt`` (a tensor, or a dict of tensors with ``key``; memory-mapped where torch can),
- an in-memory numpy array or torch tensor.
A directory is not a dataset: the error says so."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import MdlsaeError, expect

_NP_OK = (np.float32, np.float16, np.float64)
_ST_OK = ("F32", "F16", "BF16")
SUFFIXES = (".npy", ".safetensors", ".npz", ".pt")


def _pick(path: Path, keys: list[str], key: str | None, floating: list[str]) -> str:
    """The tensor to read: ``key`` when given, else the only one, else the only floating one."""
    if key is not None:
        expect(key in keys, f"{path}: no tensor {key!r} (found {', '.join(keys) or 'none'})")
        return key
    if len(keys) == 1:
        return keys[0]
    expect(len(floating) == 1, f"{path}: holds {len(keys)} tensors ({', '.join(keys)}); "
                               "name the activations with --key")
    return floating[0]


class Activations:
    """A read-only [n_rows, d] activation matrix served in float32 row batches.

    >>> acts = Activations(np.ones((10, 4), dtype=np.float32))
    >>> [tuple(b.shape) for b in acts.batches(4)]
    [(4, 4), (4, 4), (2, 4)]
    >>> Activations(np.ones((2, 5, 4), dtype=np.float32)).n_rows  # [batch, seq, d] -> rows
    10
    """

    def __init__(self, source: str | os.PathLike | np.ndarray | torch.Tensor, name: str | None = None,
                 key: str | None = None):
        self._slice = None
        if isinstance(source, (str, os.PathLike)):
            self.name = str(source)
            self._open_file(Path(source), key)
        else:
            self.name = name or "<array>"
            if isinstance(source, torch.Tensor):
                source = source.detach().cpu()
                if source.dtype == torch.bfloat16:
                    source = source.float()
                source = source.numpy()
            self._set_array(np.asarray(source))
        self.n_rows, self.d = self._shape

    def _set_array(self, a: np.ndarray) -> None:
        expect(a.ndim >= 2, f"{self.name}: activations must be [rows, d_in] (or [..., d_in]), "
                            f"got shape {list(a.shape)}")
        expect(a.dtype in _NP_OK, f"{self.name}: activations must be float32, float16 or float64, got {a.dtype}")
        if a.ndim > 2:
            a = a.reshape(-1, a.shape[-1])  # a view for C-ordered (and memory-mapped) arrays
        self._array, self._shape = a, a.shape

    def _open_file(self, path: Path, key: str | None) -> None:
        expect(not path.is_dir(), f"{path} is a directory; activations are one file "
                                  f"({', '.join(SUFFIXES)})")
        expect(path.is_file(), f"activation file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        expect(suffix in SUFFIXES, f"{path}: unknown activation format {suffix!r}; expected "
                                   f"{', '.join(SUFFIXES)}")
        expect(key is None or suffix != ".npy", f"{path}: a .npy file holds one array; --key {key!r} does not apply")
        try:
            if suffix == ".npy":
                self._set_array(np.load(path, mmap_mode="r", allow_pickle=False))
            elif suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    keys = list(z.files)
                    floating = [k for k in keys if z[k].dtype.kind == "f"]
                    self._set_array(z[_pick(path, keys, key, floating)])
            elif suffix == ".pt":
                self._open_pt(path, key)
            else:
                self._open_safetensors(path, key)
        except MdlsaeError:
            raise
        except Exception as e:
            raise MdlsaeError(f"{path}: not a readable {suffix} file ({e})") from None

    def _open_pt(self, path: Path, key: str | None) -> None:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict):
            keys = [str(k) for k in obj]
            floating = [k for k in keys if isinstance(obj[k], torch.Tensor) and obj[k].is_floating_point()]
            obj = obj[_pick(path, keys, key, floating)]
        else:
            expect(key is None, f"{path}: holds one tensor; --key {key!r} does not apply")
        expect(isinstance(obj, torch.Tensor), f"{path}: expected a tensor, found {type(obj).__name__}")
        if obj.dtype == torch.bfloat16:
            obj = obj.float()
        self._set_array(obj.numpy())

    def _open_safetensors(self, path: Path, key: str | None) -> None:
        from safetensors import safe_open

        f = safe_open(str(path), framework="pt")
        keys = list(f.keys())
        floating = [k for k in keys if f.get_slice(k).get_dtype() in _ST_OK + ("F64",)]
        name = _pick(path, keys, key, floating)
        sl = f.get_slice(name)
        shape, dtype = sl.get_shape(), sl.get_dtype()
        expect(len(shape) >= 2, f"{path}: tensor {name!r} must be [rows, d_in] (or [..., d_in]), got shape {shape}")
        expect(dtype in _ST_OK, f"{path}: tensor {name!r} dtype must be one of {', '.join(_ST_OK)}, got {dtype}")
        # rows of a [lead0, ..., d] tensor: flattened leading dimensions, read by first-dimension slices
        self._per_first = math.prod(shape[1:-1])
        self._file, self._slice, self._array = f, sl, None
        self._shape = (shape[0] * self._per_first, shape[-1])

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a float32 tensor, checked for NaN/Inf."""
        if self._slice is not None:
            per = self._per_first
            lo, hi = start // per, -(-stop // per)
            x = self._slice[lo:hi].float().reshape(-1, self.d)[start - lo * per:stop - lo * per]
        else:
            x = torch.from_numpy(np.array(self._array[start:stop], dtype=np.float32))
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            r, c = (int(v) for v in torch.nonzero(bad)[0])
            raise MdlsaeError(f"{self.name}: row {start + r}, column {c} is {x[r, c].item()}; "
                              "activations must be finite")
        return x

    def batches(self, batch_rows: int, start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        for s in range(start, stop, batch_rows):
            yield self.rows(s, min(s + batch_rows, stop))


def as_activations(acts, key: str | None = None) -> Activations:
    return acts if isinstance(acts, Activations) else Activations(acts, key=key)
