"""Forests of latents, and the selection rule of the strict-tree SAE.

A forest is an int array ``parents [d_sae]``: -1 for a root, else the index of the latent's
parent. This module validates one (in O(d_sae), also for hostile input), builds the regular
forests that ``mdlsae train --arch tree`` starts from, and holds the torch reference of the
tree SAE's selection (DESIGN §2, after H-SAE, Muchane et al. 2025):

- the k largest pre-activations *among the roots* are kept (ties to the lower index), if > 0;
- below an active latent, only the child with the largest pre-activation (ties to the lower
  index) may fire, and it does when its pre-activation is > 0; and so on down the levels.

A tree SAE without k (trained with a batch-level budget, ``--arch batchtree``) has a threshold
per latent instead, as a JumpReLU: the roots above theirs are kept, and the strongest child
must also exceed its own.

So a child fires only when its parent fires, and siblings exclude one another (Animal → one of
Bird, Fish, …). The native kernel (``csrc/cpu/select_quantize.cpp``) implements the same rule.

:class:`TreeRule` has two paths to the same mask: a general one for any forest (the per-parent
winner by ``scatter_reduce``, then level-by-level propagation; the reference), and one for the
regular forests that training builds, where each level's children are a contiguous block
grouped by parent, so the per-parent winner is a reshape and a ``max`` (the training hot loop).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import MdlsaeError, expect
from .topk import fast_topk_mask


def children_csr(parents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ptr [d+1], kids): the children of latent i are ``kids[ptr[i]:ptr[i+1]]``, ascending."""
    d = len(parents)
    order = np.argsort(parents, kind="stable")
    kids = order[int((parents < 0).sum()):]
    return np.searchsorted(parents[kids], np.arange(d + 1)), kids


def tree_depth(parents: np.ndarray) -> np.ndarray | None:
    """Depth of every node (roots 0), or None when some node never reaches a root (a cycle).
    Breadth-first from the roots: O(d), however deep or hostile the array."""
    parents = np.asarray(parents, dtype=np.int64)
    ptr, kids = children_csr(parents)
    depth = np.full(len(parents), -1, dtype=np.int64)
    frontier, level = np.flatnonzero(parents < 0), 0
    while len(frontier):
        depth[frontier] = level
        starts, lens = ptr[frontier], ptr[frontier + 1] - ptr[frontier]
        offsets = np.repeat(starts - np.cumsum(lens) + lens, lens)
        frontier, level = kids[offsets + np.arange(int(lens.sum()))], level + 1
    return None if (depth < 0).any() else depth


def validate_parents(parents, d_sae: int) -> np.ndarray:
    """int64 [d_sae] forest: -1 for roots, else a parent index in range, no cycles."""
    parents = np.asarray(parents)
    expect(parents.shape == (d_sae,), f"parents must have shape [{d_sae}], got {list(parents.shape)}")
    expect(np.issubdtype(parents.dtype, np.integer), f"parents must be integers, got {parents.dtype}")
    parents = parents.astype(np.int64)
    bad = np.flatnonzero((parents < -1) | (parents >= d_sae) | (parents == np.arange(d_sae)))
    if len(bad):
        i = int(bad[0])
        raise MdlsaeError(f"parents[{i}] = {int(parents[i])}: expected -1 (a root) or the index of "
                          f"another feature in [0, {d_sae})")
    expect(tree_depth(parents) is not None, "parents contain a cycle; they must form a forest")
    return parents


def regular_forest(d_sae: int, branching: list[int]) -> np.ndarray:
    """Roots first, then each level's children grouped by parent: every root has
    ``branching[0]`` children, each of them ``branching[1]``, …. d_sae must be a multiple of
    1 + b0 + b0·b1 + …."""
    expect(branching and min(branching) >= 1, f"branching must be positive integers, got {branching}")
    per_root = np.cumprod([1] + list(branching))
    expect(d_sae % int(per_root.sum()) == 0,
           f"a forest with branching {','.join(map(str, branching))} has {int(per_root.sum())} latents per "
           f"root, which does not divide d_sae={d_sae}")
    roots = d_sae // int(per_root.sum())
    parents, above, at = [np.full(roots, -1)], np.arange(roots), roots
    for b in branching:
        parents.append(np.repeat(above, b))
        above, at = np.arange(at, at + len(above) * b), at + len(above) * b
    return np.concatenate(parents).astype(np.int64)


def regular_branching(parents: np.ndarray) -> list[int] | None:
    """The branching that :func:`regular_forest` builds ``parents`` from, or None when the forest
    is not such a regular one (then only the general path of :class:`TreeRule` applies)."""
    parents = np.asarray(parents, dtype=np.int64)
    d, roots = len(parents), int((parents < 0).sum())  # regular: all of them first (checked at the end)
    branching, first, width, at = [], 0, roots, roots
    while 0 < at < d:  # level by level: the children of the level's first node give its branching
        b = int((parents == first).sum())
        if b == 0 or at + width * b > d:
            return None
        branching.append(b)
        first, width, at = at, width * b, at + width * b
    if not branching or at != d or not np.array_equal(regular_forest(d, branching), parents):
        return None
    return branching


def _top(pre: torch.Tensor, k: int, exact_ties: bool) -> torch.Tensor:
    """Bool mask of the k largest per row: ties to the lower index, or as torch.topk breaks them."""
    if exact_ties:
        return fast_topk_mask(pre, k)
    return torch.zeros_like(pre, dtype=torch.bool).scatter_(1, pre.topk(k, dim=1, sorted=False).indices, True)


class TreeRule:
    """The tree selection over torch tensors, for a fixed forest (built once: the index
    arrays, the root mask, the depth; for a regular forest its levels, unless ``general``)."""

    def __init__(self, parents: torch.Tensor, general: bool = False):
        p = parents.to(torch.int64)
        self.d = len(p)
        self.roots = p < 0
        self.child = torch.nonzero(~self.roots).squeeze(1)
        self.parent_of = p[self.child]
        depth = tree_depth(p.cpu().numpy())
        expect(depth is not None, "parents contain a cycle; they must form a forest")
        self.depth = int(depth.max()) if self.d else 0
        branching = None if general else regular_branching(p.cpu().numpy())
        # (first parent, parents, branching) per level; the level's children follow its parents
        self.levels, self.n_roots = [], int(self.roots.sum())
        first, width = 0, self.n_roots
        for b in branching or []:
            self.levels.append((first, width, b))
            first, width = first + width, width * b

    def to(self, device) -> "TreeRule":
        for name in ("roots", "child", "parent_of"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def winners(self, pre: torch.Tensor, threshold: torch.Tensor | None = None) -> torch.Tensor:
        """Bool [rows, n_children]: child j is the first child of its parent with the parent's
        largest pre-activation, and that pre-activation is > 0 (and above j's threshold)."""
        rows, par = pre.shape[0], self.parent_of.expand(pre.shape[0], -1)
        cp = pre[:, self.child]
        best = pre.new_full((rows, self.d), -torch.inf).scatter_reduce(1, par, cp, "amax")
        top = cp == best.gather(1, par)
        first = torch.full((rows, self.d), self.d, dtype=torch.int64, device=pre.device).scatter_reduce(
            1, par, torch.where(top, self.child.expand(rows, -1), self.d), "amin")
        win = (first.gather(1, par) == self.child) & (cp > 0)
        return win if threshold is None else win & (cp > threshold[self.child])

    def mask(self, pre: torch.Tensor, k: int | None, exact_ties: bool = True,
             threshold: torch.Tensor | None = None) -> torch.Tensor:
        """Bool [rows, d]: the latents the tree rule keeps, with the k largest roots, or (k None
        or 0) with every latent's ``threshold`` [d]. ``exact_ties=False`` breaks ties among the
        roots as torch.topk does (training, where ties do not matter)."""
        expect(bool(k) != (threshold is not None), "a tree selects by k or by thresholds, exactly one of them")
        if self.levels:
            return self._regular_mask(pre, k, exact_ties, threshold)
        if k:
            keep = _top(pre.masked_fill(~self.roots, -torch.inf), min(k, self.n_roots), exact_ties)
        else:
            keep = self.roots & (pre > threshold)
        keep &= pre > 0
        if len(self.child):
            win = self.winners(pre, threshold)
            for _ in range(self.depth):  # level by level: a child needs its parent kept
                keep[:, self.child] = win & keep[:, self.parent_of]
        return keep

    def path_min(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` [rows, d] (in place) with every latent's value capped by its parent's, level by
        level: the smallest value on its path from the root."""
        for first, width, b in self.levels:
            start = first + width
            kids = v[:, start:start + width * b]
            torch.minimum(kids, v[:, first:start].repeat_interleave(b, dim=1), out=kids)
        if not self.levels:
            for _ in range(self.depth):
                v[:, self.child] = torch.minimum(v[:, self.child], v[:, self.parent_of])
        return v

    def _regular_mask(self, pre: torch.Tensor, k: int | None, exact_ties: bool,
                      threshold: torch.Tensor | None) -> torch.Tensor:
        """:meth:`mask` for a regular forest: the roots are the first columns, and below each
        level's parents [first, first + width) sit their children, b per parent in order, so
        a parent's winner is the max (first index on ties) of its row of b."""
        rows, r = pre.shape[0], self.n_roots
        keep = torch.empty(pre.shape, dtype=torch.bool, device=pre.device)
        root_pre = pre[:, :r]
        top = _top(root_pre, min(k, r), exact_ties) if k else root_pre > threshold[:r]
        keep[:, :r] = top & (root_pre > 0)
        for first, width, b in self.levels:
            start = first + width
            kids = pre[:, start:start + width * b].reshape(rows, width, b)
            best, at = kids.max(dim=2, keepdim=True)
            fire = (best > 0) & keep[:, first:start].unsqueeze(2)
            if threshold is not None:  # the winner's own threshold
                fire &= best > threshold[start:start + width * b].view(1, width, b).expand(rows, -1, -1).gather(2, at)
            keep[:, start:start + width * b] = torch.zeros_like(kids, dtype=torch.bool).scatter_(
                2, at, fire).reshape(rows, width * b)
        return keep
