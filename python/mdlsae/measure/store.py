"""The sparse codes of a whole dataset, kept between the two passes of ``encode`` so that the
second pass codes them instead of running the SAE again (DESIGN §6: one encoder pass per row).
Codes stay in memory up to a byte budget; beyond it they go to an anonymous temporary file in
a chosen folder (beside the output), which the operating system removes when it is closed —
also when the process fails.

>>> import numpy as np
>>> store = CodeStore(d_sae=8, budget=0, spill_dir=".")  # everything spills
>>> a = SparseCodes(np.array([0, 1, 3]), np.array([2, 0, 5], np.int32), np.array([1, 4, 2], np.int32), 8)
>>> store.append(a); store.append(a)
>>> store.rows(1, 3) == SparseCodes.concat([a.slice(1, 2), a.slice(0, 1)], 8)
True
>>> store.close()
"""

from __future__ import annotations

import os
import tempfile
from typing import Iterator

import numpy as np

from .codes import SparseCodes


class CodeStore:
    def __init__(self, d_sae: int, budget: int, spill_dir: str | os.PathLike):
        self.d_sae, self.budget, self.spill_dir = d_sae, budget, spill_dir
        self.n_rows = 0
        self.in_memory = 0
        self.spilled_bytes = 0
        self._starts: list[int] = []
        self._segments: list[SparseCodes | tuple[int, int, int]] = []  # codes, or (offset, rows, nnz)
        self._file = None
        self._cached: tuple[int, SparseCodes] | None = None  # the last spilled segment read

    def append(self, codes: SparseCodes) -> None:
        self._starts.append(self.n_rows)
        self.n_rows += codes.n_rows
        if self.in_memory + codes.nbytes <= self.budget:
            self._segments.append(SparseCodes(codes.row_ptr.copy(), codes.index.copy(), codes.q.copy(), self.d_sae))
            self.in_memory += codes.nbytes
            return
        if self._file is None:
            self._file = tempfile.TemporaryFile(dir=self.spill_dir, prefix=".mdlsae-codes-")
        offset = self._file.seek(0, os.SEEK_END)
        for a, dtype in ((codes.row_ptr, np.int64), (codes.index, np.int32), (codes.q, np.int32)):
            self._file.write(np.ascontiguousarray(a, dtype=dtype).tobytes())
        self._segments.append((offset, codes.n_rows, codes.nnz))
        self.spilled_bytes += codes.nbytes

    def _segment(self, i: int) -> SparseCodes:
        seg = self._segments[i]
        if isinstance(seg, SparseCodes):
            return seg
        if self._cached is not None and self._cached[0] == i:
            return self._cached[1]
        offset, rows, nnz = seg
        self._file.seek(offset)
        row_ptr = np.fromfile(self._file, dtype=np.int64, count=rows + 1)
        index = np.fromfile(self._file, dtype=np.int32, count=nnz)
        q = np.fromfile(self._file, dtype=np.int32, count=nnz)
        self._cached = (i, SparseCodes(row_ptr, index, q, self.d_sae))
        return self._cached[1]

    def rows(self, start: int, stop: int) -> SparseCodes:
        """Codes of rows [start, stop); read in increasing order, each spilled segment is read
        about once."""
        i = int(np.searchsorted(self._starts, start, side="right")) - 1
        parts = []
        while start < stop:
            seg = self._segment(i)
            a = start - self._starts[i]
            b = min(stop - self._starts[i], seg.n_rows)
            parts.append(seg.slice(a, b))
            start += b - a
            i += 1
        return SparseCodes.concat(parts, self.d_sae)

    def batches(self) -> Iterator[SparseCodes]:
        """Every stored batch of codes in row order, one in memory at a time."""
        for i in range(len(self._segments)):
            yield self._segment(i)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "CodeStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
