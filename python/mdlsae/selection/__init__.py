"""Selection layer: choosing quantization and SAEs by description length. Effective precision,
the coarsest step meeting a tolerance ε (``precision``), per-feature step allocation
(``allocate``) and MDL model selection among candidate SAEs (``select``: :func:`select_sae`).
Imports the measurement, models and data layers; independent of the codec.
"""

from .allocate import Allocation, allocate_steps
from .precision import METRICS, Precision, effective_precision, rd_curve
from .select import CRITERIA, Candidate, Selection, evaluate_sae, select_sae

__all__ = ["Allocation", "CRITERIA", "Candidate", "METRICS", "Precision", "Selection", "allocate_steps",
           "effective_precision", "evaluate_sae", "rd_curve", "select_sae"]
