"""Strict-tree SAE (after H-SAE, Muchane et al. 2025): the k largest root pre-activations are
kept, and below each kept latent only its strongest child may fire, when positive, level by
level (:class:`mdlsae.models.tree.TreeRule`). The rule is the same in training and at inference,
so a child never fires without its parent and the off-parent half of its conditional code is
empty. Gradients reach the kept latents as in TopK.

The forest is fixed while training: a regular one from ``TrainConfig.branching`` (roots first,
then each level's children grouped by parent; ``regular_forest``), or the one of the SAE it
starts from (:func:`tree_from`: a flat SAE plus its discovered forest).
"""

from __future__ import annotations

import numpy as np
import torch

from ....errors import expect
from ...sae import SAE, SAEConfig
from ...tree import regular_forest, validate_parents
from .base import Forward, Objective
from .batchtopk import bag_decode

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
        branching = list(self.cfg.branching or DEFAULT_BRANCHING)
        parents = regular_forest(self.d_sae, branching)
        roots = int((parents < 0).sum())
        expect(self.k <= roots, f"k={self.k} exceeds the tree's {roots} roots (d_sae={self.d_sae}, branching "
                                f"{','.join(map(str, branching))})")
        return parents

    def attach(self, sae, init, scale: float) -> None:
        self.rule = sae.tree_rule(self.device)  # the regular forest, or the starting SAE's

    def forward(self, sae, pre: torch.Tensor) -> Forward:
        rows, cols = torch.nonzero(self.rule.mask(pre, self.k, exact_ties=False), as_tuple=True)
        vals = pre[rows, cols]
        x_hat = bag_decode(sae.W_dec, rows, len(pre), cols, vals) + sae.b_dec
        return Forward(x_hat, cols, len(vals) / len(pre), pre.new_zeros(()))
