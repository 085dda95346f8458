"""One small module per trainable architecture behind the :class:`Objective` interface; the
training loop looks them up here by name. Imports only ``base`` and torch."""

from .base import Forward, Objective
from .batchtopk import BatchTopK, batchtopk_threshold
from .jumprelu import JumpReLU
from .matryoshka import Matryoshka
from .relu import ReLU
from .topk import TopK

OBJECTIVES: dict[str, type[Objective]] = {"topk": TopK, "batchtopk": BatchTopK, "jumprelu": JumpReLU, "relu": ReLU,
                                         "matryoshka": Matryoshka}

__all__ = ["OBJECTIVES", "Objective", "Forward", "batchtopk_threshold"]
