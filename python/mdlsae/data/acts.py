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
- ``.arrow`` (a Hugging Face ``datasets`` shard, memory-mapped; needs pyarrow): the floating
  column (one per hook, as SAELens's activation cache writes them) or ``key``; each dataset
  row ([context, d_in]) gives its context's rows,
- a directory or a glob pattern of shards of one of these kinds, read as one dataset: a
  ``datasets`` folder (``state.json``) in its own shard order, otherwise the files in natural
  name order (``shard_2`` before ``shard_10``); all shards must agree in width and dtype,
- an in-memory numpy array or torch tensor.
"""

from __future__ import annotations

import glob
import json
import math
import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from ..errors import MdlsaeError, expect

_NP_OK = (np.float32, np.float16, np.float64)
_ST_OK = ("F32", "F16", "BF16")
SUFFIXES = (".npy", ".safetensors", ".npz", ".pt", ".arrow")


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


class _Array:
    """Rows of an in-memory or memory-mapped numpy array."""

    def __init__(self, a: np.ndarray, name: str):
        expect(a.ndim >= 2, f"{name}: activations must be [rows, d_in] (or [..., d_in]), got shape {list(a.shape)}")
        expect(a.dtype in _NP_OK, f"{name}: activations must be float32, float16 or float64, got {a.dtype}")
        if a.ndim > 2:
            a = a.reshape(-1, a.shape[-1])  # a view for C-ordered (and memory-mapped) arrays
        self.a, (self.n_rows, self.d), self.dtype = a, a.shape, str(a.dtype)

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.a[start:stop], dtype=np.float32))


class _Safetensors:
    """Rows of one tensor of a .safetensors file, read by slices of its first dimension."""

    def __init__(self, path: Path, key: str | None):
        from safetensors import safe_open

        self.file = safe_open(str(path), framework="pt")
        keys = list(self.file.keys())
        floating = [k for k in keys if self.file.get_slice(k).get_dtype() in _ST_OK + ("F64",)]
        name = _pick(path, keys, key, floating)
        self.slice = self.file.get_slice(name)
        shape, self.dtype = self.slice.get_shape(), self.slice.get_dtype()
        expect(len(shape) >= 2, f"{path}: tensor {name!r} must be [rows, d_in] (or [..., d_in]), got shape {shape}")
        expect(self.dtype in _ST_OK, f"{path}: tensor {name!r} dtype must be one of {', '.join(_ST_OK)}, "
                                     f"got {self.dtype}")
        self.per_first = math.prod(shape[1:-1])  # rows per index of the first dimension
        self.n_rows, self.d = shape[0] * self.per_first, shape[-1]

    def rows(self, start: int, stop: int) -> torch.Tensor:
        per = self.per_first
        lo, hi = start // per, -(-stop // per)
        return self.slice[lo:hi].float().reshape(-1, self.d)[start - lo * per:stop - lo * per]


class _Arrow:
    """One column of a ``datasets`` Arrow shard; a dataset row of shape [ctx, d] is ctx rows."""

    def __init__(self, path: Path, key: str | None):
        try:
            import pyarrow as pa
            import pyarrow.ipc as ipc
        except ImportError:
            raise MdlsaeError(f"{path}: reading Arrow shards needs pyarrow: pip install 'mdlsae[arrow]'") from None
        source = pa.memory_map(str(path))
        try:
            table = ipc.open_stream(source).read_all()  # datasets writes the IPC stream format
        except pa.ArrowInvalid:
            table = ipc.open_file(source).read_all()
        names = table.column_names
        floating = [n for n in names if _innermost(table.schema.field(n).type) in ("float", "halffloat", "double")]
        name = _pick(path, names, key, floating)
        arr, vectors = table.column(name).combine_chunks(), None
        while not pa.types.is_floating(arr.type):
            if isinstance(arr, pa.ExtensionArray):  # datasets' Array2D when datasets is imported
                arr = arr.storage
                continue
            expect(pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
                   or pa.types.is_fixed_size_list(arr.type),
                   f"{path}: column {name!r} holds {table.schema.field(name).type}, not floating-point rows")
            vectors, arr = arr, arr.flatten()  # zero-copy, down to the float values
        expect(vectors is not None, f"{path}: column {name!r} holds scalars, not activation vectors")
        expect(arr.null_count == 0, f"{path}: column {name!r} has missing values")
        if pa.types.is_fixed_size_list(vectors.type):
            self.d = vectors.type.list_size
        else:
            lengths = np.diff(np.asarray(vectors.offsets))
            expect(len(lengths) > 0 and bool((lengths == lengths[0]).all()),
                   f"{path}: column {name!r} has activation vectors of different lengths")
            self.d = int(lengths[0])
        self.n_rows = len(arr) // self.d
        self.values = arr.to_numpy(zero_copy_only=False).reshape(self.n_rows, self.d)
        self.dtype = str(self.values.dtype)
        expect(self.values.dtype in _NP_OK, f"{path}: column {name!r} dtype {self.dtype} is not supported")

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.values[start:stop], dtype=np.float32))


def _innermost(t) -> str:
    while hasattr(t, "value_type"):
        t = t.value_type
    if hasattr(t, "storage_type"):  # an extension type such as datasets' Array2D
        return _innermost(t.storage_type)
    return str(t)


def _open_file(path: Path, key: str | None):
    expect(path.is_file(), f"activation file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    expect(suffix in SUFFIXES, f"{path}: unknown activation format {suffix!r}; expected {', '.join(SUFFIXES)}")
    expect(key is None or suffix != ".npy", f"{path}: a .npy file holds one array; --key {key!r} does not apply")
    try:
        if suffix == ".npy":
            return _Array(np.load(path, mmap_mode="r", allow_pickle=False), str(path))
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.files)
                floating = [k for k in keys if z[k].dtype.kind == "f"]
                return _Array(z[_pick(path, keys, key, floating)], str(path))
        if suffix == ".pt":
            return _open_pt(path, key)
        if suffix == ".arrow":
            return _Arrow(path, key)
        return _Safetensors(path, key)
    except MdlsaeError:
        raise
    except Exception as e:
        raise MdlsaeError(f"{path}: not a readable {suffix} file ({e})") from None


def _open_pt(path: Path, key: str | None) -> _Array:
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
    return _Array(obj.numpy(), str(path))


def _natural(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def shard_files(spec: str | os.PathLike) -> list[Path]:
    """The shard files of a directory or glob pattern, in the documented order."""
    text = str(spec)
    if not Path(text).exists() and any(c in text for c in "*?["):
        files = sorted((Path(p) for p in glob.glob(text) if Path(p).is_file()), key=lambda p: _natural(p.name))
        expect(bool(files), f"no files match {text!r}")
    else:
        folder = Path(text)
        state = folder / "state.json"
        if state.is_file():  # a datasets save_to_disk folder: its own shard order
            try:
                files = [folder / f["filename"] for f in json.loads(state.read_text())["_data_files"]]
            except (ValueError, KeyError, TypeError) as e:
                raise MdlsaeError(f"{state}: not a datasets state.json ({e})") from None
        else:
            files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES),
                           key=lambda p: _natural(p.name))
        expect(bool(files), f"{folder} is a directory holding no activation shards ({', '.join(SUFFIXES)})")
    kinds = sorted({p.suffix.lower() for p in files})
    expect(len(kinds) == 1, f"{spec}: shards of several kinds ({', '.join(kinds)}); keep one kind per dataset")
    return files


class _Window:
    """Rows [start, stop) of another Activations (see Activations.window)."""

    def __init__(self, acts: "Activations", start: int, stop: int):
        self.acts, self.start, self.n_rows, self.d = acts, start, stop - start, acts.d
        self.dtype = acts._parts[0].dtype

    def rows(self, start: int, stop: int) -> torch.Tensor:
        return self.acts.rows(self.start + start, self.start + stop)


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
        if isinstance(source, (str, os.PathLike)):
            self.name = str(source)
            path = Path(source)
            if path.is_file():
                files, parts = [path], [_open_file(path, key)]
            else:
                expect(path.is_dir() or any(c in str(source) for c in "*?["),
                       f"activation file {str(source)!r} does not exist")
                files = shard_files(source)
                parts = [_open_file(f, key) for f in files]
                for p, f in zip(parts[1:], files[1:]):
                    expect(p.d == parts[0].d, f"{f}: shard has d_in={p.d}, the first shard d_in={parts[0].d}")
                    expect(p.dtype == parts[0].dtype, f"{f}: shard dtype {p.dtype}, the first shard {parts[0].dtype}")
        else:
            self.name = name or "<array>"
            if isinstance(source, torch.Tensor):
                source = source.detach().cpu()
                if source.dtype == torch.bfloat16:
                    source = source.float()
                source = source.numpy()
            parts = [_Array(np.asarray(source), self.name)]
            files = [self.name]
        self._parts = parts
        self._starts = np.cumsum([0] + [p.n_rows for p in parts])
        self.shards = [Path(f).name for f in files]  # names of the shard files (or of the one source)
        self.n_rows, self.d = int(self._starts[-1]), parts[0].d

    @property
    def shard_starts(self) -> np.ndarray:
        """The first row of each shard file, then n_rows (``[0, n_rows]`` for one file)."""
        return self._starts.copy()

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows [start, stop) as a float32 tensor, checked for NaN/Inf."""
        start, stop = max(0, start), min(stop, self.n_rows)
        first = int(np.searchsorted(self._starts, start, side="right")) - 1
        pieces = []
        i = first
        while i < len(self._parts) and self._starts[i] < stop:
            lo = max(start, int(self._starts[i])) - int(self._starts[i])
            hi = min(stop, int(self._starts[i + 1])) - int(self._starts[i])
            if hi > lo:
                pieces.append(self._parts[i].rows(lo, hi))
            i += 1
        x = pieces[0] if len(pieces) == 1 else torch.cat(pieces) if pieces else torch.empty(0, self.d)
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            r, c = (int(v) for v in torch.nonzero(bad)[0])
            raise MdlsaeError(f"{self.name}: row {start + r}, column {c} is {x[r, c].item()}; "
                              "activations must be finite")
        return x

    def window(self, start: int, stop: int) -> "Activations":
        """Rows [start, stop) as an Activations of their own (no copy): e.g. fit on some rows,
        measure on the others."""
        expect(0 <= start <= stop <= self.n_rows, f"{self.name}: row window [{start}, {stop}) is not inside "
                                                  f"its {self.n_rows} rows")
        if (start, stop) == (0, self.n_rows):
            return self
        view = object.__new__(Activations)
        view.name, view.d, view.n_rows = f"{self.name}[{start}:{stop}]", self.d, stop - start
        view._parts, view._starts = [_Window(self, start, stop)], np.array([0, stop - start])
        view.shards = [view.name]
        return view

    def batches(self, batch_rows: int, start: int = 0, stop: int | None = None) -> Iterator[torch.Tensor]:
        stop = self.n_rows if stop is None else min(stop, self.n_rows)
        for s in range(start, stop, batch_rows):
            yield self.rows(s, min(s + batch_rows, stop))


def as_activations(acts, key: str | None = None) -> Activations:
    return acts if isinstance(acts, Activations) else Activations(acts, key=key)
