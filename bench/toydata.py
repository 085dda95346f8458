"""Toy activations for the codec benches, generated in row blocks so that memory stays bounded.

The dictionary and firing rates come from :func:`mdlsae.data.make_toy` (same directions, same
power-law rates, same uniform [0.5, 1.5] magnitudes); only the rows are drawn block by block
with numpy. ``tree`` data plants a hierarchy: root features with power-law rates, each with
children that can fire only while their root fires. Also the co-occurrence forest that the
benches derive from codes alone.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from mdlsae.data import make_toy, power_law_rates


@dataclass
class ToySpec:
    name: str
    d: int
    n_features: int
    mean_active: float  # flat: expected active features per row; tree: expected active roots
    k: int  # TopK of the true-dictionary SAE
    exponent: float = 0.5
    children: tuple[float, ...] = ()  # tree: P(child j fires | its root fires), per child slot
    seed: int = 0

    @property
    def n_roots(self) -> int:
        return self.n_features // (1 + len(self.children)) if self.children else self.n_features

    def parents(self) -> np.ndarray | None:
        """The planted forest: roots 0..R-1, child j of root r at R + r*C + j."""
        if not self.children:
            return None
        r, c = self.n_roots, len(self.children)
        par = np.full(self.n_features, -1, dtype=np.int64)
        par[r:r + r * c] = np.repeat(np.arange(r), c)
        return par


def dictionary(spec: ToySpec) -> tuple[np.ndarray, np.ndarray]:
    """Unit feature directions [n_features, d] and the root firing rates."""
    base = make_toy(n_rows=0, d=spec.d, n_features=spec.n_features, mean_active=min(spec.mean_active, 1.0),
                    exponent=spec.exponent, seed=spec.seed)
    return base.features, power_law_rates(spec.n_roots, spec.mean_active, spec.exponent)


def blocks(spec: ToySpec, n_rows: int, block_rows: int = 16384, dtype=np.float32) -> Iterator[np.ndarray]:
    features, rates = dictionary(spec)
    rng = np.random.default_rng(spec.seed + 1)
    r, c = spec.n_roots, len(spec.children)
    for start in range(0, n_rows, block_rows):
        b = min(block_rows, n_rows - start)
        on = rng.random((b, r), dtype=np.float32) < rates.astype(np.float32)
        if c:
            kids = on[:, :, None] & (rng.random((b, r, c), dtype=np.float32) < np.asarray(spec.children, np.float32))
            on = np.concatenate([on, kids.reshape(b, r * c)], axis=1)
            if on.shape[1] < spec.n_features:  # leftover features never fire
                on = np.pad(on, ((0, 0), (0, spec.n_features - on.shape[1])))
        z = np.zeros(on.shape, dtype=np.float32)
        z[on] = rng.uniform(0.5, 1.5, int(on.sum())).astype(np.float32)
        yield (z @ features).astype(dtype)


def make(spec: ToySpec, n_rows: int) -> np.ndarray:
    return np.concatenate(list(blocks(spec, n_rows)), axis=0) if n_rows else np.zeros((0, spec.d), np.float32)


def cooccurrence_parents(codes, min_cond: float = 0.3) -> np.ndarray:
    """A forest from the codes alone: feature i's parent is the more frequent feature j that is
    active in the largest share of i's rows, if that share is at least ``min_cond``."""
    d = codes.d_sae
    rows = codes.rows()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's beta-sparse notices
        a = torch.sparse_coo_tensor(np.stack([rows, codes.index]), torch.ones(codes.nnz), (codes.n_rows, d))
        co = (a.t() @ a).to_dense().numpy()  # [d, d]
    n = np.diag(co).copy()
    more = (n[None, :] > n[:, None]) | ((n[None, :] == n[:, None]) & (np.arange(d)[None, :] < np.arange(d)[:, None]))
    cond = np.where(more, co / np.maximum(n[:, None], 1), -1.0)
    j = cond.argmax(1)
    return np.where(cond[np.arange(d), j] >= min_cond, j, -1).astype(np.int64)
