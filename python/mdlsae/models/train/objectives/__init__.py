"""One small module per trainable architecture behind the :class:`Objective` interface; the
training loop looks them up here by name. Imports ``base``, torch and the SAE model modules."""

from .base import Forward, Objective
from .batchtopk import BatchTopK, batchtopk_threshold
from .jumprelu import JumpReLU
from .matryoshka import Matryoshka
from .relu import ReLU
from .topk import TopK
from .tree import BatchTree, Tree, tree_from

OBJECTIVES: dict[str, type[Objective]] = {"topk": TopK, "batchtopk": BatchTopK, "jumprelu": JumpReLU, "relu": ReLU,
                                         "matryoshka": Matryoshka, "tree": Tree,
                                         "batchtree": BatchTree}

__all__ = ["OBJECTIVES", "Objective", "Forward", "batchtopk_threshold", "tree_from"]
