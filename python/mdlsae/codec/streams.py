"""The device rANS coder: codes of many chunks in, their ``.mdl`` chunk payloads out (and back),
every independent stream (per chunk and per group of ``features_per_stream`` features, DESIGN §3)
coded at once. The same steps run on a CUDA device (``_C_cuda``: one GPU thread per stream) or
on the host (``_C.flat``, the host build of the very driver the GPU runs, which the tests hold
to the CPU chunk coder's bytes). Everything stays on the codes' device: the feature-major
transposition (a stable sort), the three native steps and the scans between them; the host
sees one size (for the word buffer), one error check and the finished bytes. Decoding counts,
then writes, each pass by depth level of the parent forest (a child's gaps run over its
parent's rows; with exclusive siblings by depth and rank), and makes the row-major codes with one sort.

>>> import numpy as np, torch
>>> from mdlsae._native import _C
>>> from mdlsae.codec.api import build_model
>>> from mdlsae.measure.entropy import FeatureStats
>>> from mdlsae.measure.kernels import Histogram
>>> hist = Histogram(4)
>>> ptr, idx, q = np.array([0, 2, 3, 3]), np.array([0, 3, 1], np.int32), np.array([2, 1, 5], np.int32)
>>> hist.add_codes(idx, q, 3)
>>> p, hq, hc = hist.to_csr()
>>> model = build_model(FeatureStats(3, hist.active_counts(), p, hq, hc))
>>> coder = StreamCoder(model, "cpu", features_per_stream=2)
>>> coder.encode(torch.from_numpy(ptr), torch.from_numpy(idx), torch.from_numpy(q), chunk_rows=2) == \\
...     _C.encode_chunks(model, ptr, idx, q, 2, 2)
True
"""

from __future__ import annotations

import numpy as np
import torch

from .._native import _C, _C_cuda
from ..errors import MdlsaeError, expect

_STATE_WORDS = 8  # codec/rans.h kStateWords: the flushed lane states that open every stream


class StreamCoder:
    """A file's entropy model (``_C.Model``) laid out flat on ``device`` for the stream coder."""

    def __init__(self, model, device, features_per_stream: int = 0):
        self.device = torch.device(device)
        expect(self.device.type in ("cpu", "cuda"), f"the stream coder runs on the CPU or a CUDA device, "
                                                    f"got {self.device}")
        if self.device.type == "cuda":
            expect(_C_cuda is not None, "this mdlsae was built without CUDA: encode on the CPU or reinstall "
                                        "with a CUDA toolkit present")
        self.backend = _C_cuda if self.device.type == "cuda" else _C.flat
        flat = model.flat_tables()
        self.d_sae = int(flat.pop("d_sae"))
        self.exclusive = bool(flat.pop("exclusive"))
        self.has_children = bool((flat["parent"] >= 0).any())
        self.tables = {k: torch.from_numpy(np.ascontiguousarray(v)).to(self.device) for k, v in flat.items()}
        self.per = self.d_sae if features_per_stream <= 0 else int(features_per_stream)
        self.n_streams = -(-self.d_sae // self.per)
        counts = model.counts()
        self.max_m = int(max(counts["m_main"].max(initial=0), counts["m_off"].max(initial=0)))
        # where each level begins in coding order: each depth of the forest (roots first), and with
        # exclusive siblings each rank among them within it (a child's context needs its earlier siblings)
        parent = flat["parent"].astype(np.int64)
        depth, up = np.zeros(self.d_sae, np.int64), parent.copy()
        while (up >= 0).any():
            depth += up >= 0
            up = np.where(up >= 0, parent[np.maximum(up, 0)], -1)
        level = depth * (int(flat["rank"].max(initial=0)) + 1) + flat["rank"] if self.exclusive else depth
        key = level[flat["order"]]
        self.level_start = torch.from_numpy(np.r_[np.flatnonzero(np.r_[True, key[1:] != key[:-1]]), len(key)]).to(
            self.device)

    def bytes_per_code(self) -> int:
        """Device bytes per code while coding: the word buffer's bound (values, and at most
        2m + 2 symbols per gap, see codec/stream_codec.h), the transposed codes, the sort's keys
        and the scratch of children."""
        return 4 * (2 * self.max_m + 3) + 48

    def encode(self, row_ptr: torch.Tensor, index: torch.Tensor, q: torch.Tensor, chunk_rows: int) -> list[bytes]:
        """Payloads of the chunks of ``chunk_rows`` rows of the CSR codes (row_ptr int64 [rows + 1],
        index and q int32, on this coder's device): ``_C.encode_chunks``'s bytes."""
        dev, d = self.device, self.d_sae
        row_ptr, index, q = (t.to(dev) for t in (row_ptr, index, q))
        n_rows, nnz = row_ptr.numel() - 1, index.numel()
        expect(chunk_rows > 0, f"chunk_rows must be positive, got {chunk_rows}")
        n_chunks = -(-n_rows // chunk_rows)
        if n_chunks == 0:
            return []
        expect(min(chunk_rows, n_rows) < 2**31 - 1, f"a chunk holds {min(chunk_rows, n_rows)} rows, more than 2^31 - 1")
        i64 = dict(dtype=torch.int64, device=dev)
        widths = row_ptr.diff()
        first, last, narrowest = torch.stack([row_ptr[0], row_ptr[-1], widths.min() if n_rows else row_ptr[0]]).tolist()
        expect(first == 0 and last == nnz and narrowest >= 0 and q.numel() == nnz,
               f"codes are inconsistent: row_ptr runs from {first} to {last} (decreasing: {narrowest < 0}), index has "
               f"{nnz} entries, q has {q.numel()}")
        if nnz:
            lo, hi = torch.stack([index.min(), index.max()]).tolist()
            expect(lo >= 0 and hi < d, f"codes have features in [{lo}, {hi}], outside [0, {d})")
        # feature-major per chunk: stable by key (chunk, feature), so rows stay increasing
        rows = torch.repeat_interleave(torch.arange(n_rows, **i64), widths, output_size=nnz)
        chunk = rows // chunk_rows
        key = chunk * d + index.long()
        perm = torch.argsort(key, stable=True)
        col_row = (rows - chunk * chunk_rows)[perm].to(torch.int32)
        col_q = q[perm].to(torch.int32).contiguous()
        col_ptr = torch.zeros(n_chunks * d + 1, **i64)
        col_ptr[1:] = torch.cumsum(torch.bincount(key, minlength=n_chunks * d), 0)
        scratch = [torch.empty(nnz if self.has_children else 0, dtype=torch.int32, device=dev) for _ in range(2)]
        siblings = {}
        if self.exclusive:  # place_siblings' scratch and results
            siblings = dict(taken=torch.zeros(nnz, dtype=torch.int32, device=dev), held=torch.zeros(n_chunks * d, **i64),
                            place=torch.empty(2 * n_chunks * d, **i64))
        args = self._args(n_chunks, chunk_rows, n_rows, col_ptr=col_ptr, col_row=col_row, col_q=col_q,
                          scratch_on=scratch[0], scratch_off=scratch[1], **siblings)
        n = n_chunks * self.n_streams
        stream = self._stream()
        if self.exclusive:
            placed = torch.empty((n_chunks, 3), dtype=torch.int32, device=dev)
            self.backend.place_siblings(args, status=placed.data_ptr(), stream=stream)
            bad = placed[:, 0] != 0
            if bool(bad.any()):
                _raise_for(placed, bad)
        bound = torch.empty(n, **i64)
        self.backend.stream_bounds(args, bound=bound.data_ptr(), stream=stream)
        word_off = torch.zeros(n + 1, **i64)
        word_off[1:] = torch.cumsum(bound, 0)
        words = torch.empty(int(word_off[-1]), dtype=torch.int32, device=dev)  # sync 1: the buffer's size
        states = torch.empty(n * _STATE_WORDS, dtype=torch.int32, device=dev)
        n_words = torch.empty(n, **i64)
        status = torch.empty((n, 3), dtype=torch.int32, device=dev)  # StreamStatus: error, feature, value
        self.backend.encode_streams(args, word_off=word_off.data_ptr(), words=words.data_ptr(),
                                    states=states.data_ptr(), n_words=n_words.data_ptr(),
                                    status=status.data_ptr(), stream=stream)
        size = 4 * (_STATE_WORDS + n_words)
        header = 4 * (self.n_streams - 1)  # a chunk's stream lengths, its last stream's excepted
        ends = torch.cumsum(size, 0)
        byte_off = ends - size + header * (torch.arange(n, **i64) // self.n_streams + 1)
        failed = status[:, 0] != 0
        over = n_words + _STATE_WORDS > bound  # never, or the bound of codec/stream_codec.h is wrong
        total, n_failed, n_over = torch.stack([ends[-1] + header * n_chunks, failed.sum(), over.sum()]).tolist()
        if n_over:  # sync 2 (above): the total size and any failure
            raise RuntimeError(f"internal error: {n_over} streams outgrew their word bound")
        if n_failed:
            _raise_for(status, failed)
        out = torch.empty(total, dtype=torch.uint8, device=dev)
        self.backend.write_streams(args, word_off=word_off.data_ptr(), words=words.data_ptr(),
                                   states=states.data_ptr(), n_words=n_words.data_ptr(),
                                   byte_off=byte_off.data_ptr(), out=out.data_ptr(), stream=stream)
        begins = (byte_off[::self.n_streams] - header).cpu().tolist() + [total]
        data = out.cpu().numpy().tobytes()
        return [data[begins[c]:begins[c + 1]] for c in range(n_chunks)]

    def decode(self, payloads: list[bytes], rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The CSR codes (row_ptr int64, index int32, q int32, on this coder's device) of chunk
        payloads of ``rows`` rows each (every chunk but the last of rows[0] rows):
        ``_C.decode_chunks``'s codes. Damaged payloads raise MdlsaeError."""
        dev, d, n_chunks = self.device, self.d_sae, len(payloads)
        expect(len(rows) == n_chunks, f"{n_chunks} payloads but {len(rows)} row counts")
        i64 = dict(dtype=torch.int64, device=dev)
        if n_chunks == 0:
            return torch.zeros(1, **i64), torch.zeros(0, dtype=torch.int32, device=dev), torch.zeros(0, dtype=torch.int32,
                                                                                                    device=dev)
        chunk_rows, total = int(rows[0]), int(sum(rows))
        expect(all(r == chunk_rows for r in rows[:-1]) and 0 <= rows[-1] <= chunk_rows and chunk_rows < 2**31 - 1,
               f"chunks must all hold {chunk_rows} rows but the last, which may hold fewer; got {list(rows)[:8]}")
        sizes = np.array([len(p) for p in payloads], dtype=np.int64)
        if (sizes % 4).any():
            c = int(np.flatnonzero(sizes % 4)[0])
            raise MdlsaeError(f"damaged: chunk {c} has {sizes[c]} bytes, not a whole number of 32-bit words")
        chunk_off = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)])).to(dev)
        data = torch.frombuffer(bytearray(b"".join(payloads)) or bytearray(4), dtype=torch.uint8).to(dev)
        count = torch.zeros(n_chunks * d, **i64)
        n = n_chunks * self.n_streams
        states = torch.empty(n * self.backend.decode_state_bytes, dtype=torch.uint8, device=dev)
        status = torch.empty((n, 3), dtype=torch.int32, device=dev)
        stream = self._stream()
        held = torch.zeros(n_chunks * d if self.exclusive else 0, **i64)
        args = self._args(n_chunks, chunk_rows, total, data=data, chunk_off=chunk_off, level_start=self.level_start,
                          count=count, held=held)
        self._decode_pass(args, states, write=False, stream=stream)
        self.backend.decode_end(args, states=states.data_ptr(), status=status.data_ptr(), stream=stream)
        failed = status[:, 0] != 0
        if bool(failed.any()):
            _raise_for(status, failed)
        col_ptr = torch.zeros(n_chunks * d + 1, **i64)
        col_ptr[1:] = torch.cumsum(count, 0)
        nnz = int(col_ptr[-1])
        col_row, col_q, on, off = (torch.empty(nnz, dtype=torch.int32, device=dev) for _ in range(4))
        held.zero_()
        taken = torch.zeros(nnz if self.exclusive else 0, dtype=torch.int32, device=dev)
        args = self._args(n_chunks, chunk_rows, total, data=data, chunk_off=chunk_off, level_start=self.level_start,
                          count=count, col_ptr=col_ptr, col_row=col_row, col_q=col_q, scratch_on=on, scratch_off=off,
                          held=held, taken=taken)
        self._decode_pass(args, states, write=True, stream=stream)
        # row-major: sort the (row, feature) keys of the columns' entries
        cell = torch.repeat_interleave(torch.arange(n_chunks * d, **i64), count, output_size=nnz)
        row = (cell // d) * chunk_rows + col_row
        order = torch.argsort(row * d + cell % d)
        row_ptr = torch.zeros(total + 1, **i64)
        row_ptr[1:] = torch.cumsum(torch.bincount(row, minlength=total), 0)
        return row_ptr, (cell % d)[order].to(torch.int32), col_q[order]

    def _decode_pass(self, args: dict, states: torch.Tensor, write: bool, stream: int) -> None:
        self.backend.decode_begin(args, states=states.data_ptr(), stream=stream)
        for level in range(len(self.level_start) - 1):
            self.backend.decode_level(args, level=level, write=write, states=states.data_ptr(), stream=stream)

    def _args(self, n_chunks: int, chunk_rows: int, total_rows: int, **buffers) -> dict:
        """The driver's arguments: tables, layout and the buffers' addresses (absent ones 0)."""
        args = {k: t.data_ptr() for k, t in self.tables.items()}
        for k in ("col_ptr", "col_row", "col_q", "scratch_on", "scratch_off", "data", "chunk_off", "level_start",
                  "count", "taken", "held", "place"):
            args[k] = buffers[k].data_ptr() if k in buffers and buffers[k].numel() else 0
        args.update(d_sae=self.d_sae, n_chunks=n_chunks, chunk_rows=chunk_rows, total_rows=total_rows,
                    n_streams=self.n_streams, per=self.per, exclusive=self.exclusive)
        return args

    def _stream(self) -> int:
        return torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0


def _raise_for(status: torch.Tensor, failed: torch.Tensor):
    """The first failed stream's error, in the CPU coder's words."""
    try:
        _C.check_stream(*status[int(torch.nonzero(failed)[0])].tolist())
    except ValueError as e:
        raise MdlsaeError(str(e)) from None
    except RuntimeError as e:
        raise MdlsaeError(f"damaged: {e}") from None
    raise RuntimeError("internal error: a stream failed without a reason")  # pragma: no cover
