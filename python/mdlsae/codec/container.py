"""The ``.mdl`` file (DESIGN §4): a versioned, checksummed container of independently decodable
row chunks. Layout, little-endian::

    magic  b"\\x89MDL\\r\\n\\x1a\\n" | u16 version | u16 flags | u32 header_crc | u64 header_len
    header: u32 json_len | JSON metadata | model counts (varints) | per-feature steps (f32, optional)
    index:  u64 n_chunks | n_chunks x (u64 offset, u32 nbytes, u32 rows, u32 crc32) | u32 index_crc
    chunk payloads, back to back, to the end of the file

The reader checks every length, offset and checksum before using it and turns any damage into
an :class:`~mdlsae.errors.MdlsaeError`; the writer goes through a temporary file renamed into
place, so a failed write leaves nothing behind.

A sharded output (:class:`MdlSet`) is a folder of such files, one per input shard, whose headers
add ``model_rows`` (the rows of the shared entropy model: all the shards'), and a
``manifest.json``: ``{"format": "mdlsae-shards", "version": 1, "n_rows": N, "files": [{"file":
"shard_00000.mdl", "rows": n, "source": input shard name}, ...]}`` in row order.
"""

from __future__ import annotations

import json
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._native import _C
from ..errors import MdlsaeError, expect

MAGIC = b"\x89MDL\r\n\x1a\n"
# 2: chunk streams carry two interleaved rANS lanes that start from state 1, and no stream count
# 3: four lanes; a gap's whole-block decisions coded as a few multi-bit symbols
# 4: exclusive siblings (a strict tree SAE's children coded over their context), the header's exclusive_siblings
VERSION = 4
_PREAMBLE = struct.Struct("<8sHHIQ")
_ENTRY = struct.Struct("<QIII")


_MAX_D = 1 << 30  # d_in and d_sae: beyond any dictionary, far below what overflows a count
_HEX = set("0123456789abcdef")


def _int(lo: int, hi: int):
    return lambda v: type(v) is int and lo <= v <= hi, f"an integer in [{lo}, {hi}]"


def _positive_float(v) -> bool:
    return type(v) in (int, float) and math.isfinite(v) and v > 0


# The header fields a reader relies on: each a test of a JSON value and what it expects.
_FIELDS = {
    "format": (lambda v: v == "mdlsae", '"mdlsae"'),
    "writer": (lambda v: isinstance(v, str), "a string"),
    "created": (lambda v: isinstance(v, str), "a string"),
    "architecture": (lambda v: isinstance(v, str), "a string"),
    "sae_sha256": (lambda v: isinstance(v, str) and len(v) == 64 and set(v) <= _HEX, "64 hex digits"),
    "d_in": _int(1, _MAX_D),
    "d_sae": _int(1, _MAX_D),
    "k": (lambda v: v is None or (type(v) is int and v >= 1), "null or a positive integer"),
    "n_rows": _int(0, 1 << 62),
    "chunk_rows": _int(1, _C.MAX_CHUNK_ROWS),
    "features_per_stream": _int(0, _MAX_D),
    "model_bytes": _int(0, 1 << 62),
    "has_parents": (lambda v: type(v) is bool, "true or false"),
    "exclusive_siblings": (lambda v: type(v) is bool, "true or false"),
    "per_feature_steps": (lambda v: type(v) is bool, "true or false"),
    "step": (lambda v: v is None or _positive_float(v), "null or a positive finite number"),
}

# Fields only some files have: a shard's model_rows (the rows of the model all its set's shards share).
_OPTIONAL = {"model_rows": _int(0, 1 << 62)}


def check_meta(meta, damaged) -> dict:
    """``meta`` checked field by field (presence, type, range); ``damaged(what)`` makes the error.
    Fields a reader does not use are kept but not checked."""
    if not isinstance(meta, dict):
        raise damaged(f"header metadata is a JSON {type(meta).__name__}, not an object")
    missing = [name for name in _FIELDS if name not in meta]
    if missing:
        raise damaged(f"header field {missing[0]!r} is missing")
    for name, (ok, expected) in (_FIELDS | _OPTIONAL).items():
        if name in meta and not ok(meta[name]):
            raise damaged(f"header field {name!r} is {meta[name]!r}, expected {expected}")
    if meta.get("model_rows", meta["n_rows"]) < meta["n_rows"]:
        raise damaged(f"header field 'model_rows' ({meta['model_rows']}) is below n_rows ({meta['n_rows']})")
    if meta["per_feature_steps"] == (meta["step"] is not None):
        raise damaged("header fields 'step' and 'per_feature_steps' disagree: exactly one of a global step "
                      "and per-feature steps must be given")
    if meta["step"] is not None:
        meta["step"] = float(meta["step"])
    return meta


@dataclass
class ChunkEntry:
    offset: int
    nbytes: int
    rows: int
    crc: int


def pack_header(meta: dict, model_blob: bytes, steps: np.ndarray | None) -> bytes:
    js = json.dumps(meta, sort_keys=True).encode()
    steps_blob = b"" if steps is None else np.asarray(steps, dtype="<f4").tobytes()
    return struct.pack("<I", len(js)) + js + model_blob + steps_blob


def index_bytes(entries: list[ChunkEntry]) -> bytes:
    body = struct.pack("<Q", len(entries)) + b"".join(
        _ENTRY.pack(e.offset, e.nbytes, e.rows, e.crc) for e in entries)
    return body + struct.pack("<I", zlib.crc32(body))


def index_size(n_chunks: int) -> int:
    return 8 + n_chunks * _ENTRY.size + 4


def preamble(header: bytes) -> bytes:
    return _PREAMBLE.pack(MAGIC, VERSION, 0, zlib.crc32(header), len(header))


def head_of(header: bytes, nbytes: list[int], rows: list[int], crcs: list[int]) -> bytes:
    """Preamble, header and index of a file whose chunks' sizes are known in advance (chunks
    written elsewhere, e.g. by other ranks, after these bytes in order)."""
    offset = _PREAMBLE.size + len(header) + index_size(len(nbytes))
    offsets = np.concatenate([[0], np.cumsum(nbytes, dtype=np.int64)])[:-1] + offset
    entries = [ChunkEntry(int(o), int(n), int(r), int(c)) for o, n, r, c in zip(offsets, nbytes, rows, crcs)]
    return preamble(header) + header + index_bytes(entries)


class MdlWriter:
    """Streams a .mdl file: header and a placeholder index first, chunks as they come, then the
    real index. Use inside :func:`mdlsae.fileio.atomic_file`."""

    def __init__(self, f, header: bytes, n_chunks: int):
        self.f = f
        self.n_chunks = n_chunks
        f.write(preamble(header))
        f.write(header)
        self.index_at = f.tell()
        f.write(b"\0" * index_size(n_chunks))
        self.entries: list[ChunkEntry] = []

    def add_chunk(self, payload: bytes, rows: int) -> None:
        self.entries.append(ChunkEntry(self.f.tell(), len(payload), rows, zlib.crc32(payload)))
        self.f.write(payload)

    def finish(self) -> None:
        expect(len(self.entries) == self.n_chunks,
               f"internal: wrote {len(self.entries)} chunks, header announced {self.n_chunks}")
        self.f.seek(self.index_at)
        self.f.write(index_bytes(self.entries))
        self.f.seek(0, os.SEEK_END)


class MdlFile:
    """A validated, open .mdl file: metadata, entropy model, chunk index; chunks read lazily."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        expect(self.path.is_file(), f"{str(self.path)!r} does not exist")
        self.file_bytes = self.path.stat().st_size
        self._f = open(self.path, "rb")
        try:
            self._read_head()
        except BaseException:
            self._f.close()
            raise

    def _damaged(self, what: str) -> MdlsaeError:
        return MdlsaeError(f"{self.path}: not a valid .mdl file or damaged: {what}")

    def _read_exact(self, offset: int, n: int, what: str) -> bytes:
        if offset < 0 or n < 0 or offset + n > self.file_bytes:
            raise self._damaged(f"{what} at byte {offset} (+{n}) lies outside the file ({self.file_bytes} bytes)")
        self._f.seek(offset)
        data = self._f.read(n)
        if len(data) != n:
            raise self._damaged(f"{what} is truncated")
        return data

    def _read_head(self) -> None:
        pre = self._read_exact(0, _PREAMBLE.size, "preamble")
        magic, version, flags, header_crc, header_len = _PREAMBLE.unpack(pre)
        if magic != MAGIC:
            raise MdlsaeError(f"{self.path}: not a .mdl file (bad magic bytes)")
        if version != VERSION:
            age = "an older" if version < VERSION else "a newer"
            raise MdlsaeError(f"{self.path}: .mdl format version {version}, written by {age} mdlsae; this one reads "
                              f"version {VERSION} only. Decode it with the mdlsae that wrote it, or encode the "
                              "activations again")
        if flags != 0:
            raise self._damaged(f"unknown flags {flags:#x}")
        header = self._read_exact(_PREAMBLE.size, header_len, "header")
        if zlib.crc32(header) != header_crc:
            raise self._damaged("header checksum mismatch")
        self.header_bytes = _PREAMBLE.size + header_len
        if header_len < 4:
            raise self._damaged("header is shorter than its length field")
        (js_len,) = struct.unpack_from("<I", header)
        if 4 + js_len > header_len:
            raise self._damaged(f"header metadata of {js_len} bytes overruns the header ({header_len} bytes)")
        try:
            meta = json.loads(header[4:4 + js_len])
        except ValueError as e:
            raise self._damaged(f"header metadata is not JSON ({e})") from None
        self.meta = meta = check_meta(meta, self._damaged)
        d_sae, n_rows, chunk_rows = meta["d_sae"], meta["n_rows"], meta["chunk_rows"]
        # Sizes that set allocations are bounded by the bytes that would have to back them.
        if d_sae > meta["model_bytes"] // _C.MIN_FEATURE_BYTES:
            raise self._damaged(f"d_sae={d_sae} needs more than the {meta['model_bytes']} bytes of model tables")
        blob_end = 4 + js_len + meta["model_bytes"]
        steps_len = 4 * d_sae if meta["per_feature_steps"] else 0
        if blob_end + steps_len != len(header):
            raise self._damaged("header sections do not add up")
        n_chunks = -(-n_rows // chunk_rows)
        if index_size(n_chunks) > self.file_bytes - self.header_bytes:
            raise self._damaged(f"n_rows={n_rows} in chunks of {chunk_rows} needs an index of {n_chunks:,} chunks, "
                                f"more than the file holds")
        try:  # a shard of a sharded output codes with the model of all its shards' rows
            self.model = _C.Model.unpack(header[4 + js_len:blob_end], d_sae, meta.get("model_rows", n_rows),
                                         meta["has_parents"], meta["exclusive_siblings"])
        except (RuntimeError, ValueError) as e:
            raise self._damaged(f"model tables: {e}") from None
        if meta["per_feature_steps"]:
            self.step = np.frombuffer(header[blob_end:], dtype="<f4").astype(np.float32)
            if not (np.isfinite(self.step).all() and (self.step > 0).all()):
                raise self._damaged("per-feature steps are not all positive and finite")
        else:
            self.step = meta["step"]
        idx = self._read_exact(self.header_bytes, index_size(n_chunks), "chunk index")
        (stored_n,) = struct.unpack_from("<Q", idx)
        body, (crc,) = idx[:-4], struct.unpack_from("<I", idx, len(idx) - 4)
        if stored_n != n_chunks or zlib.crc32(body) != crc:
            raise self._damaged("chunk index checksum mismatch")
        self.chunks = [ChunkEntry(*_ENTRY.unpack_from(body, 8 + i * _ENTRY.size)) for i in range(n_chunks)]
        pos = self.header_bytes + len(idx)
        for i, c in enumerate(self.chunks):
            want_rows = min(chunk_rows, n_rows - i * chunk_rows)
            if c.offset != pos or c.rows != want_rows:
                raise self._damaged(f"chunk {i} index entry is inconsistent")
            pos += c.nbytes
        if pos != self.file_bytes:
            raise self._damaged(f"file is {self.file_bytes} bytes but its chunks end at byte {pos}")
        self.index_bytes = len(idx)

    @property
    def n_rows(self) -> int:
        return int(self.meta["n_rows"])

    @property
    def d_sae(self) -> int:
        return int(self.meta["d_sae"])

    @property
    def chunk_rows(self) -> int:
        return int(self.meta["chunk_rows"])

    @property
    def payload_bytes(self) -> int:
        return sum(c.nbytes for c in self.chunks)

    def read_chunk(self, i: int) -> bytes:
        c = self.chunks[i]
        data = self._read_exact(c.offset, c.nbytes, f"chunk {i}")
        if zlib.crc32(data) != c.crc:
            raise self._damaged(f"chunk {i} checksum mismatch")
        return data

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "MdlFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


MANIFEST = "manifest.json"


class MdlSet:
    """A sharded output read as one file: a folder of ``.mdl`` files, one per input shard, that
    share one entropy model (that of all their rows), and ``manifest.json`` listing them in row
    order. Offers what :class:`MdlFile` offers to ``decode`` and ``inspect``."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest = self.path / MANIFEST
        expect(manifest.is_file(), f"{str(self.path)!r} is a folder without {MANIFEST}: not a sharded .mdl output")
        try:
            m = json.loads(manifest.read_text())
            expect(m.get("format") == "mdlsae-shards", f"{manifest}: not an mdlsae manifest")
            names, rows = [e["file"] for e in m["files"]], [int(e["rows"]) for e in m["files"]]
            self.n_rows, self.sources = int(m["n_rows"]), [e.get("source") for e in m["files"]]
        except (ValueError, KeyError, TypeError) as e:
            raise MdlsaeError(f"{manifest}: unreadable manifest ({e})") from None
        expect(bool(names) and all(Path(n).name == n for n in names), f"{manifest}: bad file list {names!r}")
        expect(sum(rows) == self.n_rows, f"{manifest}: shard rows add up to {sum(rows)}, not n_rows={self.n_rows}")
        self.files: list[MdlFile] = []
        try:
            for name, n in zip(names, rows):
                f = MdlFile(self.path / name)
                self.files.append(f)
                expect(f.n_rows == n, f"{f.path}: holds {f.n_rows} rows, the manifest says {n}")
                expect(int(f.meta.get("model_rows", -1)) == self.n_rows,
                       f"{f.path}: coded with a model of {f.meta.get('model_rows')} rows, not the set's {self.n_rows}")
                same = {k: v for k, v in f.meta.items() if k != "n_rows"} == \
                    {k: v for k, v in self.files[0].meta.items() if k != "n_rows"}
                expect(same and f.model.pack() == self.files[0].model.pack(),
                       f"{f.path}: its SAE, steps or entropy model differ from {self.files[0].path.name}'s")
        except BaseException:
            self.close()
            raise
        self.starts = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        first = self.files[0]
        self.meta = {**first.meta, "n_rows": self.n_rows}
        self.model, self.step, self.d_sae, self.chunk_rows = first.model, first.step, first.d_sae, first.chunk_rows
        self.chunks = [c for f in self.files for c in f.chunks]
        self.payload_bytes = sum(f.payload_bytes for f in self.files)
        self.header_bytes = sum(f.header_bytes for f in self.files) + manifest.stat().st_size
        self.index_bytes = sum(f.index_bytes for f in self.files)
        self.file_bytes = sum(f.file_bytes for f in self.files) + manifest.stat().st_size

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> "MdlSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_mdl(path: str | os.PathLike) -> MdlFile | MdlSet:
    """A .mdl file, or a folder written by ``encode --sharded`` read as one."""
    return MdlSet(path) if Path(path).is_dir() else MdlFile(path)
