"""Measurement layer: SAE codes and their description length (DESIGN §2). Quantized sparse codes
(``codes``), the native fused select/quantize/histogram kernels (``kernels``) and their plain
torch references (``reference``), the DL estimate from per-feature statistics (``entropy``),
two-part accounting (``twopart``) and the streaming measurement of an SAE on a dataset
(``dl``: :func:`measure_dl`). Imports the models and data layers and the base modules.
"""

from .dl import DLReport, ErrorStats, measure_dl, report, scan, step_summary

__all__ = ["DLReport", "ErrorStats", "measure_dl", "report", "scan", "step_summary"]
