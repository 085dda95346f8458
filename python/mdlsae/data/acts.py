"""Activation datasets: 2-D arrays [N, d_in] read in row batches so that files larger than RAM
stream in bounded memory. Sources: ``.npy`` (memory-mapped, float32 or float16),
``.safetensors`` holding one 2-D tensor (float32, float16 or bfloat16; read slice by slice),
or an in-memory numpy array / torch tensor."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import MdlsaeError, expect

_NP_OK = (np.float32, np.float16)
_ST_OK = ("F32", "F16", "BF16")


class Activations:
    """A read-only [n_rows, d] activation matrix served in float32 row batches.

    >>> acts = Activations(np.ones((10, 4), dtype=np.float32))
    >>> [tuple(b.shape) for b in acts.batches(4)]
    [(4, 4), (4, 4), (2, 4)]
    """

    def __init__(self, source: str | os.PathLike | np.ndarray | torch.Tensor, name: str | None = None):
        self._slice = None
        if isinstance(source, (str, os.PathLike)):
            self.name = str(source)
            self._open_file(Path(source))
        else:
            self.name = name or "<array>"
            if isinstance(source, torch.Tensor):
                source = source.detach().cpu()
                if source.dtype == torch.bfloat16:
                    source = source.float()
                source = source.numpy()
            self._array = np.asarray(source)
            self._check_array(self._array)
        self.n_rows, self.d = self._shape

    def _check_array(self, a: np.ndarray) -> None:
        expect(a.ndim == 2, f"{self.name}: activations must be 2-D [rows, d_in], got shape {list(a.shape)}")
        expect(a.dtype in _NP_OK or a.dtype == np.float64,
               f"{self.name}: activations must be float32 or float16, got {a.dtype}")
        self._shape = a.shape

    def _open_file(self, path: Path) -> None:
        expect(path.is_file(), f"activation file {str(path)!r} does not exist")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                self._array = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as e:
                raise MdlsaeError(f"{path}: not a readable .npy file ({e})") from None
            expect(self._array.dtype in _NP_OK,
                   f"{path}: activations must be float32 or float16, got {self._array.dtype}")
            self._check_array(self._array)
        elif suffix == ".safetensors":
            from safetensors import safe_open

            try:
                f = safe_open(str(path), framework="pt")
                keys = list(f.keys())
            except Exception as e:
                raise MdlsaeError(f"{path}: not a readable .safetensors file ({e})") from None
            expect(len(keys) == 1, f"{path}: expected exactly one tensor, found {len(keys)} ({', '.join(keys)})")
            sl = f.get_slice(keys[0])
            shape, dtype = sl.get_shape(), sl.get_dtype()
            expect(len(shape) == 2, f"{path}: tensor {keys[0]!r} must be 2-D [rows, d_in], got shape {shape}")
            expect(dtype in _ST_OK, f"{path}: tensor dtype must be one of {', '.join(_ST_OK)}, got {dtype}")
            self._file, self._slice, self._shape = f, sl, tuple(shape)
            self._array = None
        else:
            raise MdlsaeError(f"{path}: unknown activation format {suffix!r}; expected .npy or .safetensors")

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a float32 tensor, checked for NaN/Inf."""
        if self._slice is not None:
            x = self._slice[start:stop].float()
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


def as_activations(acts) -> Activations:
    return acts if isinstance(acts, Activations) else Activations(acts)
