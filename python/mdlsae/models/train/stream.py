"""Data order for training in bounded memory: batches cut from shuffled pools of row blocks,
sample rows, and the data's moments in one streaming pass.

Each epoch visits blocks of consecutive rows in a random order, shuffles rows within pools of
blocks and cuts batches from that stream, so files larger than RAM train well. Everything
follows from (seed, epoch), so a resumed run can start at any batch.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from ...data.acts import Activations
from .config import BLOCK_ROWS, POOL_BYTES


class BatchStream:
    """The batches of one epoch: blocks of BLOCK_ROWS consecutive rows in a random order, grouped
    into pools whose rows are shuffled together, cut into batches of ``batch_size`` rows
    (the remainder of an epoch is dropped)."""

    def __init__(self, acts: Activations, batch_size: int, seed: int, device: torch.device):
        self.acts, self.seed, self.device = acts, seed, device
        self.batch_size = min(batch_size, acts.n_rows)
        self.steps_per_epoch = acts.n_rows // self.batch_size
        self.n_blocks = -(-acts.n_rows // BLOCK_ROWS)
        self.pool_blocks = max(1, POOL_BYTES // (4 * acts.d * BLOCK_ROWS))

    def _block_sizes(self, blocks: np.ndarray) -> np.ndarray:
        return np.minimum(BLOCK_ROWS, self.acts.n_rows - blocks * BLOCK_ROWS)

    def _pool(self, epoch: int, j: int, blocks: np.ndarray) -> torch.Tensor:
        x = torch.cat([self.acts.rows(int(b) * BLOCK_ROWS, min((int(b) + 1) * BLOCK_ROWS, self.acts.n_rows))
                       for b in blocks])
        perm = np.random.default_rng([self.seed, epoch, j, 1]).permutation(len(x))
        return x[torch.from_numpy(perm)].to(self.device)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        order = np.random.default_rng([self.seed, epoch, 0]).permutation(self.n_blocks)
        pools = [order[i:i + self.pool_blocks] for i in range(0, self.n_blocks, self.pool_blocks)]
        ends = np.cumsum([self._block_sizes(p).sum() for p in pools])
        pos, stop = start * self.batch_size, self.steps_per_epoch * self.batch_size
        j = int(np.searchsorted(ends, pos, side="right"))
        pending: list[torch.Tensor] = []
        have = 0
        while pos < stop:
            data = self._pool(epoch, j, pools[j])
            off = pos - (int(ends[j - 1]) if j else 0)
            while off < len(data) and pos < stop:
                take = min(self.batch_size - have, len(data) - off)
                pending.append(data[off:off + take])
                have, off, pos = have + take, off + take, pos + take
                if have == self.batch_size:
                    yield pending[0] if len(pending) == 1 else torch.cat(pending)
                    pending, have = [], 0
            j += 1


def sample_rows(acts: Activations, n: int) -> torch.Tensor:
    """Up to ``n`` rows in evenly spaced blocks (all rows when there are few)."""
    if acts.n_rows <= n:
        return acts.rows(0, acts.n_rows)
    n_blocks = max(1, n // BLOCK_ROWS)
    starts = np.linspace(0, acts.n_rows - BLOCK_ROWS, n_blocks).astype(np.int64)
    return torch.cat([acts.rows(int(s), int(s) + BLOCK_ROWS) for s in starts])


def moments(acts: Activations, progress: bool) -> tuple[torch.Tensor, float]:
    """Mean row and E||x - mean||² in one streaming pass (float64 sums)."""
    s = torch.zeros(acts.d, dtype=torch.float64)
    s2 = 0.0
    for x in tqdm(acts.batches(65536), total=-(-acts.n_rows // 65536), disable=not progress,
                  desc="scan data", leave=False):
        xd = x.double()
        s += xd.sum(0)
        s2 += float((xd * xd).sum())
    mean = s / acts.n_rows
    return mean.float(), max(s2 / acts.n_rows - float((mean * mean).sum()), 0.0)
