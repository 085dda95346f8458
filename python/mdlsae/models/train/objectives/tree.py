"""Strict-tree SAE (after H-SAE, Muchane et al. 2025): the k largest root pre-activations are
kept, and below each kept latent only its strongest child may fire, when positive, level by
level (:class:`mdlsae.models.tree.TreeRule`). The rule is the same in training and at inference,
so a child never fires without its parent and the off-parent half of its conditional code is
empty. Gradients reach the kept latents as in TopK.

The forest is fixed while training: a regular one from ``TrainConfig.branching`` (roots first,
then each level's children grouped by parent; ``regular_forest``), or the one of the SAE it
starts from (:func:`tree_from`: a flat SAE plus its discovered forest).

``batchtree`` is the tree under a batch-level budget, as BatchTopK is TopK's: the candidates are
every positive root and, below each candidate, its strongest positive child; each candidate's
value for the budget is the smallest pre-activation on its path from the root, and the k·batch
largest of the batch are kept — a strict selection of k latents per row on average, with as
many roots in a row as it needs. Inference uses one threshold calibrated at the end (the mean
smallest value kept), saved as a tree without k: the roots above it, and below each kept latent
its strongest child when above it too (the same selection).
"""

from __future__ import annotations

import numpy as np
import torch

from ....errors import expect
from ...sae import SAE, SAEConfig
from ...tree import regular_forest, validate_parents
from .base import Forward, Objective
from .batchtopk import bag_decode, mean_smallest_kept

DEFAULT_BRANCHING = [4]  # every root has 4 children: D/5 roots


def tree_from(sae: SAE, parents, k: int | None = None) -> SAE:
    """A tree SAE with ``sae``'s weights and the forest ``parents`` (e.g. discovered on its
    codes by ``mdlsae parents``), keeping ``k`` roots (default: ``sae``'s k)."""
    expect(sae.cfg.architecture in ("topk", "tree"), f"a tree SAE starts from a topk or tree SAE, got "
                                                     f"{sae.cfg.architecture!r}")
    parents = validate_parents(parents, sae.d_sae)
    k = int(k or sae.cfg.k)
    expect(k <= int((parents < 0).sum()), f"k={k} exceeds the forest's {int((parents < 0).sum())} roots")
    cfg = SAEConfig("tree", d_in=sae.d_in, d_sae=sae.d_sae, k=k, apply_b_dec_to_input=sae.cfg.apply_b_dec_to_input,
                    normalize_activations=sae.cfg.normalize_activations, extra=dict(sae.cfg.extra), parents=parents)
    weights = {n: p.detach().clone() for n, p in sae.named_parameters()}
    return SAE.from_weights(cfg, weights, where="the starting SAE")


class Tree(Objective):
    trained_arch = saved_arch = "tree"

    def forest(self) -> np.ndarray:
        return regular_forest(self.d_sae, list(self.cfg.branching or DEFAULT_BRANCHING))

    def attach(self, sae, init, scale: float) -> None:
        self.rule = sae.tree_rule(self.device)  # the regular forest, or the starting SAE's
        expect(not self.keeps_k or self.k <= self.rule.n_roots,
               f"k={self.k} exceeds the tree's {self.rule.n_roots} roots (d_sae={self.d_sae})")

    def select(self, pre: torch.Tensor) -> torch.Tensor:
        """Bool [batch, d_sae]: the latents kept in training."""
        return self.rule.mask(pre, self.k, exact_ties=False)

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        rows, cols = torch.nonzero(self.select(pre), as_tuple=True)
        vals = pre[rows, cols]
        x_hat = bag_decode(sae.W_dec, rows, len(pre), cols, vals) + sae.b_dec
        return Forward(x_hat, cols, len(vals) / len(pre), pre.new_zeros(()))


class BatchTree(Tree):
    saved_arch = "tree"
    keeps_k = False
    init_archs = ("tree",)  # a tree with k (tree_from a flat SAE) or without (an earlier batchtree)

    def select(self, pre: torch.Tensor) -> torch.Tensor:
        return tree_budget_mask(self.rule, pre, self.k)

    def finish(self, sae, sample: torch.Tensor, scale: float) -> None:
        with torch.no_grad():
            sae.threshold.fill_(tree_threshold(sae, sample, self.k))


def _path_values(rule, pre: torch.Tensor) -> torch.Tensor:
    """[rows, d]: for the candidates (the positive roots and, below each, its strongest positive
    child, level by level) the smallest pre-activation on their path from the root, -inf for
    the others. A threshold keeps a candidate with all its ancestors exactly when this value is
    above it, so a budget on these values is a budget on a strict selection."""
    pre = pre.detach()
    cand = rule.mask(pre, None, exact_ties=False, threshold=pre.new_zeros(pre.shape[1]))
    return rule.path_min(torch.where(cand, pre, -torch.inf))


def tree_budget_mask(rule, pre: torch.Tensor, k: int) -> torch.Tensor:
    """Bool [rows, d]: the k·rows candidates of the batch with the largest path values (all of
    them when fewer): strict, and k per row on average."""
    m = _path_values(rule, pre)
    keep = m > -torch.inf
    v = m[keep]
    if v.numel() > k * len(pre):
        keep &= m >= v.topk(k * len(pre), sorted=False).values.min()
    return keep


def tree_threshold(sae, x: torch.Tensor, k: int) -> float:
    """The batchtree's inference threshold: the mean over chunks of the smallest path value that
    the budget keeps (as :func:`batchtopk_threshold` does for BatchTopK)."""
    rule = sae.tree_rule(x.device)

    def path_values(pre: torch.Tensor) -> torch.Tensor:
        m = _path_values(rule, pre)
        return m[m > -torch.inf]
    return mean_smallest_kept(sae, x, k, path_values)
