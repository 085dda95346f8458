"""Two-part description length (DESIGN §2, seed 002 §3): data bits (the DL estimate of the
codes) plus model bits, reported separately and in total, never hiding the model bits.

Model bits are what a receiver needs besides the payload:
  - the entropy-model tables: per feature its active count and its value histogram (each
    distinct q as a gap from the previous one, and its count), all in Elias-gamma code
    (2⌊log2 n⌋ + 1 bits for n >= 1), a simple universal code that needs no agreed maximum;
  - the quantization steps, float32: one, or one per feature;
  - with a parent forest, its own bits (measure.forest: a flag per feature, and per child its
    parent's index and co-activity count); the data bits are then the conditional estimate;
  - optionally the decoder at a stated precision (e.g. float16: 16·d_in bits per row of
    W_dec, plus b_dec). Only features active at least once need their row: a feature the
    tables declare dead is never decoded.
Data bits grow with N, model bits hardly do, so bits per row amortise as data/N + model/N;
``bits_per_row_at`` makes that N-dependence explicit (tables held fixed: a rough but honest
extrapolation, since table size grows only logarithmically with N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .entropy import FeatureStats

STEP_BITS = 32
AMORTISATION_ROWS = (10 ** 3, 10 ** 4, 10 ** 5, 10 ** 6, 10 ** 7, 10 ** 8, 10 ** 9)


def elias_gamma_bits(n: np.ndarray) -> np.ndarray:
    """Length in bits of the Elias-gamma code of each integer n >= 1."""
    n = np.asarray(n, dtype=np.int64)
    return 2 * np.floor(np.log2(np.maximum(n, 1))).astype(np.int64) + 1


def table_bits(stats: FeatureStats) -> int:
    """Bits of the per-feature entropy-model tables: active count, number of distinct values,
    then (gap to previous q, count) for each distinct q."""
    distinct = np.diff(stats.hist_ptr)
    head = elias_gamma_bits(stats.active + 1).sum() + elias_gamma_bits(distinct + 1).sum()
    first = np.zeros(len(stats.hist_q), dtype=bool)
    first[stats.hist_ptr[:-1][distinct > 0]] = True
    prev = np.concatenate([[0], stats.hist_q[:-1]]).astype(np.int64)
    gaps = np.where(first, stats.hist_q, stats.hist_q - prev)
    return int(head + elias_gamma_bits(gaps).sum() + elias_gamma_bits(stats.hist_count).sum())


@dataclass
class TwoPartDL:
    n_rows: int
    data_bits: float  # the DL estimate N·Σ H_i
    table_bits: int
    step_bits: int
    decoder_bits: int  # 0 when the decoder is not counted
    decoder_precision: int  # bits per decoder weight (0: not counted)
    forest_bits: int = 0  # the parent forest, when the data bits are conditional on one

    @classmethod
    def of(cls, stats: FeatureStats, d_in: int, per_feature_steps: bool, decoder_precision: int = 16,
           forest_bits: int = 0) -> "TwoPartDL":
        alive = int((stats.active > 0).sum())
        return cls(stats.n_rows, stats.estimate_bits(conditional=True), table_bits(stats),
                   STEP_BITS * (stats.d_sae if per_feature_steps else 1),
                   decoder_precision * d_in * (alive + 1) if decoder_precision else 0, decoder_precision,
                   forest_bits)

    @property
    def model_bits(self) -> int:
        return self.table_bits + self.step_bits + self.decoder_bits + self.forest_bits

    @property
    def total_bits(self) -> float:
        return self.data_bits + self.model_bits

    @property
    def data_bits_per_row(self) -> float:
        return self.data_bits / max(self.n_rows, 1)

    @property
    def total_bits_per_row(self) -> float:
        return self.total_bits / max(self.n_rows, 1)

    def bits_per_row_at(self, n_rows: int) -> float:
        """Total bits per row if N were ``n_rows`` at the same per-row data rate."""
        return self.data_bits_per_row + self.model_bits / n_rows

    def to_dict(self) -> dict:
        return {"data_bits": self.data_bits, "table_bits": self.table_bits, "step_bits": self.step_bits,
                "forest_bits": self.forest_bits,
                "decoder_bits": self.decoder_bits, "decoder_precision": self.decoder_precision,
                "model_bits": self.model_bits, "total_bits": self.total_bits,
                "data_bits_per_row": self.data_bits_per_row, "total_bits_per_row": self.total_bits_per_row,
                "total_bits_per_row_at": {str(n): self.bits_per_row_at(n) for n in AMORTISATION_ROWS}}
