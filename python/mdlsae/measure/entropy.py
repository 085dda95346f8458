"""The description-length estimate of DESIGN §2, from per-feature statistics.

``H_i = h(p_i) + p_i * H(pi_i)`` bits per row, with p_i the firing rate and pi_i the empirical
distribution of the quantized value given active; the DL estimate is ``N * sum_i H_i``. With a
parents array, a child's activity is coded conditioned on its parent's activity; with exclusive
siblings (a strict tree SAE's own forest), over its *context* only: the parent's active rows that
no earlier sibling (lower index) holds, where the child's activity is the rest of a "which child,
if any" choice. All functions are vectorised over features (no Python loop over features).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import distributed
from .codes import SparseCodes


def binary_entropy(p: np.ndarray) -> np.ndarray:
    """h(p) in bits, elementwise, with h(0) = h(1) = 0."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros_like(p)
    m = (p > 0) & (p < 1)
    pm = p[m]
    out[m] = -(pm * np.log2(pm) + (1 - pm) * np.log2(1 - pm))
    return out


def value_entropy(ptr: np.ndarray, count: np.ndarray) -> np.ndarray:
    """H(pi_i) in bits per active value for each feature of a CSR histogram (0 when empty)."""
    d = len(ptr) - 1
    count = np.asarray(count, dtype=np.float64)
    feature = np.repeat(np.arange(d), np.diff(ptr))
    n = np.bincount(feature, weights=count, minlength=d)
    clogc = np.bincount(feature, weights=count * np.log2(np.maximum(count, 1)), minlength=d)
    out = np.zeros(d)
    m = n > 0
    out[m] = np.log2(n[m]) - clogc[m] / n[m]
    return out


def parent_cooccurrence(codes: SparseCodes, parents: np.ndarray) -> np.ndarray:
    """For each feature, the number of rows where it is active and its parent is active too."""
    d = codes.d_sae
    keys = codes.rows() * d + codes.index  # sorted: rows ascend, features ascend in a row
    par = parents[codes.index]
    has = par >= 0
    pk = (codes.rows()[has] * d + par[has])
    pos = np.searchsorted(keys, pk)
    pos = np.minimum(pos, max(len(keys) - 1, 0))
    found = keys[pos] == pk if len(keys) else np.zeros(0, dtype=bool)
    return np.bincount(codes.index[has][found], minlength=d).astype(np.int64)


@dataclass
class FeatureStats:
    """Sufficient statistics of a dataset's codes for the DL estimate."""

    n_rows: int
    active: np.ndarray  # int64 [d]: rows where feature i is active
    hist_ptr: np.ndarray  # CSR histogram of q given active
    hist_q: np.ndarray
    hist_count: np.ndarray
    parents: np.ndarray | None = None
    active_with_parent: np.ndarray | None = None  # int64 [d]: active while parent active
    exclusive: bool = False  # siblings never active in one of their parent's rows (see context_rows)

    @property
    def d_sae(self) -> int:
        return len(self.active)

    def value_bits(self) -> np.ndarray:
        """H(pi_i) per feature."""
        return value_entropy(self.hist_ptr, self.hist_count)

    def context_rows(self) -> np.ndarray:
        """int64 [d]: the rows over which each child's activity given its parent is coded: its
        parent's active rows, less, with exclusive siblings, those its earlier siblings hold
        (active_with_parent of the lower-indexed children of the same parent). 0 for roots."""
        par = self.parents
        child = par >= 0
        n_par = np.where(child, self.active[np.maximum(par, 0)], 0).astype(np.int64)
        if not self.exclusive:
            return n_par
        on = np.where(child, self.active_with_parent, 0).astype(np.int64)
        kids = np.flatnonzero(child)
        kids = kids[np.argsort(par[kids], kind="stable")]  # by parent, then index
        run = np.cumsum(on[kids]) - on[kids]  # earlier on counts, across parents
        first = np.r_[True, par[kids][1:] != par[kids][:-1]]
        before = run - np.maximum.accumulate(np.where(first, run, 0))
        out = n_par.copy()
        out[kids] -= before
        return out

    def bits_per_row(self, conditional: bool = True) -> np.ndarray:
        """H_i per feature in bits per row (conditional on parents when they are given)."""
        n = max(self.n_rows, 1)
        p = self.active / n
        values = p * self.value_bits()
        if not conditional or self.parents is None:
            return binary_entropy(p) + values
        par = self.parents
        root = par < 0
        n_par = np.where(root, 0, self.active[np.maximum(par, 0)])
        ctx = self.context_rows()
        on = np.where(root, 0, self.active_with_parent)
        off = self.active - on
        p_on = np.divide(on, ctx, out=np.zeros(len(par)), where=ctx > 0)
        p_off = np.divide(off, n - n_par, out=np.zeros(len(par)), where=(n - n_par) > 0)
        cond = (ctx / n) * binary_entropy(p_on) + ((n - n_par) / n) * binary_entropy(p_off)
        return np.where(root, binary_entropy(p), cond) + values

    def estimate_bits(self, conditional: bool = True) -> float:
        """The DL estimate N * sum_i H_i in bits."""
        return float(self.n_rows * self.bits_per_row(conditional).sum())

    def max_q(self) -> int:
        return int(self.hist_q.max()) if len(self.hist_q) else 0

    def summed_over_ranks(self) -> "FeatureStats":
        """The statistics of all ranks' rows together (each rank holding those of its share):
        exact integer sums, the histogram in the order one process's would have (by feature,
        then q). Itself when there is one process."""
        if not distributed.active():
            return self
        d = self.d_sae
        parts = distributed.gather((self.hist_ptr, self.hist_q, self.hist_count))
        feature = np.concatenate([np.repeat(np.arange(d, dtype=np.int64), np.diff(p[0])) for p in parts])
        key, inverse = np.unique((feature << 32) | np.concatenate([p[1] for p in parts]).astype(np.int64),
                                 return_inverse=True)
        count = np.zeros(len(key), dtype=np.int64)
        np.add.at(count, inverse, np.concatenate([p[2] for p in parts]).astype(np.int64))
        ptr = np.searchsorted(key >> 32, np.arange(d + 1)).astype(np.int64)
        both = None if self.active_with_parent is None else distributed.sum_int(self.active_with_parent)
        return FeatureStats(int(distributed.sum_int([self.n_rows])[0]), distributed.sum_int(self.active), ptr,
                            (key & 0xFFFFFFFF).astype(self.hist_q.dtype), count, self.parents, both, self.exclusive)


def value_bits_fixed(max_q: int) -> int:
    """B: bits of a fixed-length code for the quantized values 1..max_q (at least 1)."""
    return max(1, int(np.ceil(np.log2(max_q)))) if max_q > 1 else 1


def naive_bits_per_row(l0: float, d_sae: int, max_q: int) -> float:
    """The write-up's bound L0 * (B + log2 D)."""
    return float(l0 * (value_bits_fixed(max_q) + np.log2(d_sae)))
