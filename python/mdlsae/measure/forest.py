"""Parent discovery (DESIGN §2–3): the forest of feature parents under which the conditional DL
of an SAE's codes is smallest.

Coding child i given parent j's activity saves exactly N·I(a_i; a_j) bits of activity (the
plug-in mutual information of the two binary activities over the N rows), so with one parent
per feature the best forest is a maximum-weight spanning forest of the pairwise information
(Chow–Liu). An edge is kept only where it pays for its model bits: the parent's index
(⌈log2 D⌉ bits) and the co-activity count the file stores for the child (Elias-gamma), plus one
flag bit per feature once any feature has a parent — the same accounting as
:mod:`~mdlsae.measure.twopart`.

Counting is native and exact (``_C.PairCounter``): the codes of one SAE pass are kept in a
:class:`~mdlsae.measure.store.CodeStore`, then streamed once per block of features whose
[block, D] count matrix fills the memory budget. Candidate edges are each feature's ``k`` best
partners by information (in both directions), which holds the exact Chow–Liu forest unless a
tree edge ranks below ``k`` for both its ends; ``k = d_sae`` makes the search exhaustive.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np
from tqdm.auto import tqdm

from .. import distributed
from .._native import _C
from ..budget import budget_bytes, rows_for
from ..data.acts import as_activations
from ..errors import expect
from ..models.sae import SAE
from .codes import SparseCodes
from .dl import scan
from .entropy import FeatureStats, parent_cooccurrence
from ..models.tree import tree_depth, validate_parents
from .store import CodeStore
from .twopart import elias_gamma_bits

DEFAULT_CANDIDATES = 16


def edge_bits(d_sae: int, both: np.ndarray) -> np.ndarray:
    """Model bits of making a feature a child: its parent's index and its co-activity count."""
    return math.ceil(math.log2(max(d_sae, 2))) + elias_gamma_bits(np.asarray(both, dtype=np.int64) + 1)


@dataclass
class Forest:
    """A discovered forest and what it is predicted to save on the rows it was fit on."""

    parents: np.ndarray  # int64 [d_sae], -1 for roots
    n_rows: int  # rows the counts came from
    active: np.ndarray  # int64 [d_sae]: rows where each feature is active
    both: np.ndarray  # int64 [d_sae]: rows where a child and its parent are both active (0 for roots)
    gain_bits: np.ndarray  # float64 [d_sae]: N·I(child; parent), the activity bits saved (0 for roots)
    candidates: int  # candidate edges the forest was chosen from

    @property
    def d_sae(self) -> int:
        return len(self.parents)

    @property
    def children(self) -> np.ndarray:
        return np.flatnonzero(self.parents >= 0)

    @property
    def model_bits(self) -> int:
        """Bits of the forest itself: a flag per feature, and per child its parent and count."""
        kids = self.children
        if not len(kids):
            return 0
        return int(self.d_sae + edge_bits(self.d_sae, self.both[kids]).sum())

    def summary(self) -> dict:
        gain = float(self.gain_bits.sum())
        n = max(self.n_rows, 1)
        return {**shape_of(self.parents, self.active, self.both), "fit_rows": self.n_rows,
                "candidates": self.candidates, "saving_bits_per_row": gain / n, "model_bits": self.model_bits,
                "net_saving_bits_per_row": (gain - self.model_bits) / n}


def shape_of(parents: np.ndarray, active: np.ndarray, both: np.ndarray) -> dict:
    """Edges, trees, depth and strictness (the share of a child's activations inside its
    parent's; 1 for a strict tree) of a forest."""
    kids = np.flatnonzero(parents >= 0)
    depth = tree_depth(parents)
    act = active[kids]
    strict = np.divide(both[kids], act, out=np.zeros(len(kids)), where=act > 0)
    return {"edges": int(len(kids)), "trees": int(np.isin(np.flatnonzero(parents < 0), parents[kids]).sum()),
            "max_depth": int(depth.max()) if len(kids) else 0,
            "strictness_median": float(np.median(strict)) if len(kids) else None,
            "strictness_mean": float(strict.mean()) if len(kids) else None,
            "strict_children": int((strict >= 1.0).sum())}


def candidate_edges(batches: Callable[[], Iterable[SparseCodes]], n_rows: int, active: np.ndarray,
                    k: int = DEFAULT_CANDIDATES, progress: bool = False,
                    over_ranks: bool = False) -> tuple[np.ndarray, ...]:
    """(i, j, bits, both) of the candidate edges over the codes that ``batches()`` yields (read
    once per feature block; see the module notes), a block's counts in half the memory budget.
    With ``over_ranks`` each rank's ``batches()`` yields its share of the rows and the counts
    are summed across ranks (``n_rows`` and ``active`` are already those of all rows)."""
    d = len(active)
    block = max(1, min(d, budget_bytes() // (8 * d)))
    parts = []
    bar = tqdm(total=d, unit="feature", unit_scale=True, disable=not progress, desc="pairs")
    for lo in range(0, d, block):
        counter = _C.PairCounter(d, lo, min(d, lo + block))
        with distributed.agreed("counting pairs"):
            for codes in batches():
                counter.add(codes.row_ptr, codes.index)
        if over_ranks and distributed.active():
            counts = counter.counts()
            counts[...] = distributed.sum_int(counts)  # each sum is at most n_rows, as one process's count
        parts.append(counter.top_edges(active, n_rows, k))
        del counter
        bar.update(min(d, lo + block) - lo)
    bar.close()
    return tuple(np.concatenate([p[c] for p in parts]) for c in range(4))


def forest_of(d_sae: int, n_rows: int, active: np.ndarray, i, j, bits, both, candidates: int) -> Forest:
    """The maximum spanning forest of the candidate edges, each edge gaining its information
    less its model bits (only edges that pay are kept)."""
    active = np.asarray(active, dtype=np.int64)
    net = np.asarray(bits, dtype=np.float64) - edge_bits(d_sae, both)
    parents, edge = _C.max_forest(d_sae, np.asarray(i, np.int32), np.asarray(j, np.int32), net, active)
    kids = np.flatnonzero(parents >= 0)
    both_f, gain_f = np.zeros(d_sae, dtype=np.int64), np.zeros(d_sae)
    both_f[kids], gain_f[kids] = np.asarray(both)[edge[kids]], np.asarray(bits)[edge[kids]]
    return Forest(parents, n_rows, active, both_f, gain_f, candidates)


def discover_parents(acts, sae: SAE, step, start: int = 0, stop: int | None = None, k: int = DEFAULT_CANDIDATES,
                     progress: bool = False, spill_dir: str | os.PathLike | None = None) -> Forest:
    """The parent forest of ``sae``'s quantized codes of rows [start, stop) of ``acts``.

    >>> import torch
    >>> from mdlsae.models.sae import SAEConfig
    >>> sae = SAE.random(SAEConfig("topk", d_in=16, d_sae=32, k=4), seed=0)
    >>> f = discover_parents(torch.randn(2000, 16), sae, step=0.1)
    >>> f.parents.shape, bool((f.gain_bits[f.parents >= 0] > 0).all())
    ((32,), True)
    """
    acts = as_activations(acts)
    stop = acts.n_rows if stop is None else min(stop, acts.n_rows)
    expect(0 <= start <= stop, f"row range [{start}, {stop}) is not inside the {acts.n_rows} rows")
    expect(k >= 1, f"candidates per feature must be >= 1, got {k}")
    # the codes (half the budget in memory, the rest spilled); the counts then use the other half
    half = budget_bytes() // 2
    with CodeStore(sae.d_sae, half, spill_dir or tempfile.gettempdir()) as store:
        stats, _ = scan(acts.window(start, stop), sae, step, batch_rows=rows_for(sae.row_bytes(), half),
                        progress=progress, on_codes=store.append, error=False)
        i, j, bits, both = candidate_edges(store.batches, stats.n_rows, stats.active, min(k, sae.d_sae),
                                           progress and distributed.is_main(), over_ranks=True)
    return forest_of(sae.d_sae, stats.n_rows, stats.active, i, j, bits, both, len(i))


def forest_of_codes(codes: SparseCodes, k: int = DEFAULT_CANDIDATES) -> Forest:
    """The parent forest of codes already in memory (e.g. a dataset's true codes)."""
    active = np.bincount(codes.index, minlength=codes.d_sae).astype(np.int64)
    i, j, bits, both = candidate_edges(lambda: [codes], codes.n_rows, active, min(k, codes.d_sae))
    return forest_of(codes.d_sae, codes.n_rows, active, i, j, bits, both, len(i))


def forest_given(codes: SparseCodes, parents) -> Forest:
    """A given forest (a tree SAE's own) with its counts and gains on ``codes``: the gain of a
    child is the activity bits its parent saves, N·(h(p) − H(a | parent))."""
    parents = validate_parents(parents, codes.d_sae)
    active = np.bincount(codes.index, minlength=codes.d_sae).astype(np.int64)
    both = np.where(parents >= 0, parent_cooccurrence(codes, parents), 0)
    stats = FeatureStats(codes.n_rows, active, np.zeros(codes.d_sae + 1, dtype=np.int64), np.zeros(0, np.int64),
                         np.zeros(0, np.int64), parents, both)
    gain = codes.n_rows * (stats.bits_per_row(conditional=False) - stats.bits_per_row(conditional=True))
    return Forest(parents, codes.n_rows, active, both, gain, 0)
