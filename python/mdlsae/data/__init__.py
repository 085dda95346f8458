"""Data layer: where activations come from. Activation files read as ``[N, d]`` row batches in
bounded memory (``acts``), toy activations with ground-truth features and the feature-recovery
metric (``toy``), a real transformer's activations over text (``extract``) and MNIST
(``mnist``). Imports only the base modules (``errors``, ``fileio``); everything above reads
its rows through :func:`as_activations`.

``mdlsae.data`` keeps the toy-data names at the package level (``make_toy``, ``ToySpec``,
``write_toy``, ``load_truth``, ``max_cosine``, ``mmcs``, ``hierarchy_recovery``, ``power_law_rates``).
"""

from .acts import Activations, as_activations
from .toy import (ToyData, ToyGenerator, ToySpec, hierarchy_recovery, load_truth, make_toy, max_cosine, mmcs,
                  power_law_rates, write_toy)

__all__ = ["Activations", "as_activations", "ToyData", "ToyGenerator", "ToySpec", "load_truth", "make_toy",
           "hierarchy_recovery", "max_cosine", "mmcs", "power_law_rates", "write_toy"]
