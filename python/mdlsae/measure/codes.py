"""Quantized SAE codes in memory: row-major sparse (CSR) feature indices and quantized values,
and the quantization steps (one global step or one per feature) that turn them back into
activations z~ = q * step (DESIGN §2)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import expect


def steps_tensor(step, d_sae: int) -> torch.Tensor:
    """The step(s) as a float32 tensor broadcastable to [.., d_sae], validated."""
    t = torch.as_tensor(np.asarray(step, dtype=np.float32))
    expect(t.dim() == 0 or tuple(t.shape) == (d_sae,),
           f"step must be a number or an array of shape [{d_sae}], got shape {list(t.shape)}")
    expect(bool(torch.isfinite(t).all()) and bool((t > 0).all()),
           f"step must be positive and finite, got {t.min().item() if t.numel() else t}")
    return t


@dataclass
class SparseCodes:
    """Row r owns entries ``[row_ptr[r], row_ptr[r+1])`` of ``index`` (feature, increasing
    within a row) and ``q`` (quantized value, >= 1)."""

    row_ptr: np.ndarray  # int64 [n_rows + 1]
    index: np.ndarray  # int32 [nnz]
    q: np.ndarray  # int32 [nnz]
    d_sae: int

    @property
    def n_rows(self) -> int:
        return len(self.row_ptr) - 1

    @property
    def nnz(self) -> int:
        return len(self.index)

    def rows(self) -> np.ndarray:
        """Row of every entry (int64 [nnz])."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.row_ptr))

    def values(self, step) -> torch.Tensor:
        """z~ = q * step for every entry (float32 [nnz])."""
        st = steps_tensor(step, self.d_sae)
        q = torch.from_numpy(self.q).float()
        return q * (st[torch.from_numpy(self.index).long()] if st.dim() else st)

    def dense(self, step) -> torch.Tensor:
        """Dense dequantized latents, float32 [n_rows, d_sae]."""
        z = torch.zeros(self.n_rows, self.d_sae)
        z[torch.from_numpy(self.rows()), torch.from_numpy(self.index).long()] = self.values(step)
        return z

    def reconstruct(self, step, W_dec: torch.Tensor, b_dec: torch.Tensor) -> torch.Tensor:
        """x^ = z~ @ W_dec + b_dec without materialising z~ (a weighted embedding bag)."""
        idx = torch.from_numpy(self.index).long().to(W_dec.device)
        offsets = torch.from_numpy(self.row_ptr[:-1]).to(W_dec.device)
        w = self.values(step).to(W_dec.device, W_dec.dtype)
        out = torch.nn.functional.embedding_bag(idx, W_dec, offsets, mode="sum", per_sample_weights=w)
        return out + b_dec

    def slice(self, start: int, stop: int) -> "SparseCodes":
        """Rows [start, stop) (views of this object's arrays, row_ptr rebased)."""
        lo, hi = int(self.row_ptr[start]), int(self.row_ptr[stop])
        return SparseCodes(self.row_ptr[start:stop + 1] - lo, self.index[lo:hi], self.q[lo:hi], self.d_sae)

    @staticmethod
    def concat(parts: list["SparseCodes"], d_sae: int) -> "SparseCodes":
        """The rows of ``parts`` one after another."""
        if len(parts) == 1:
            return parts[0]
        counts = [np.diff(p.row_ptr) for p in parts]
        row_ptr = np.zeros(sum(len(c) for c in counts) + 1, dtype=np.int64)
        np.cumsum(np.concatenate(counts) if counts else np.zeros(0, np.int64), out=row_ptr[1:])
        cat = (lambda arrays: np.concatenate(arrays) if arrays else np.zeros(0, np.int32))
        return SparseCodes(row_ptr, cat([p.index for p in parts]), cat([p.q for p in parts]), d_sae)

    @property
    def nbytes(self) -> int:
        return self.row_ptr.nbytes + self.index.nbytes + self.q.nbytes

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, SparseCodes) and self.d_sae == other.d_sae
                and np.array_equal(self.row_ptr, other.row_ptr)
                and np.array_equal(self.index, other.index) and np.array_equal(self.q, other.q))
