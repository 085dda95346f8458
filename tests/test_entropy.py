"""The DL estimate agrees with an independent, literal computation of DESIGN §2."""

from __future__ import annotations

import numpy as np
import pytest

from mdlsae import MdlsaeError
from mdlsae.measure.codes import SparseCodes
from mdlsae.measure.entropy import FeatureStats, binary_entropy, parent_cooccurrence
from mdlsae.models.tree import validate_parents
from mdlsae.measure.kernels import Histogram


def literal_bits(S: np.ndarray, parents=None) -> float:
    """N * sum_i H_i from a dense symbol matrix S [N, D] (0 = inactive), by the definition."""
    n, d = S.shape

    def h(p):
        return 0.0 if p <= 0 or p >= 1 else -(p * np.log2(p) + (1 - p) * np.log2(1 - p))

    total = 0.0
    for i in range(d):
        col = S[:, i]
        act = col != 0
        vals, cnt = np.unique(col[act], return_counts=True)
        hv = -(cnt / cnt.sum() * np.log2(cnt / cnt.sum())).sum() if len(cnt) else 0.0
        p = act.mean()
        if parents is None or parents[i] < 0:
            total += h(p) + p * hv
        else:
            pa = S[:, parents[i]] != 0
            on = pa.mean()
            p_on = act[pa].mean() if pa.any() else 0.0
            p_off = act[~pa].mean() if (~pa).any() else 0.0
            total += on * h(p_on) + (1 - on) * h(p_off) + p * hv
    return n * total


def stats_of(S: np.ndarray, parents=None) -> FeatureStats:
    rows, cols = np.nonzero(S)
    row_ptr = np.zeros(S.shape[0] + 1, dtype=np.int64)
    np.cumsum((S != 0).sum(1), out=row_ptr[1:])
    codes = SparseCodes(row_ptr, cols.astype(np.int32), S[rows, cols].astype(np.int32), S.shape[1])
    h = Histogram(S.shape[1], dense_cap=4)
    h.add_codes(codes.index, codes.q, S.shape[0])
    ptr, q, count = h.to_csr()
    wp = parent_cooccurrence(codes, parents) if parents is not None else None
    return FeatureStats(S.shape[0], h.active_counts(), ptr, q, count, parents, wp)


def random_symbols(rng, n, d):
    rates = rng.uniform(0, 0.6, size=d)
    rates[0] = 0.0  # a dead feature
    rates[1] = 1.0  # always on
    act = rng.random((n, d)) < rates
    return act * rng.integers(1, 9, size=(n, d))


def test_flat_estimate_matches_literal_definition():
    rng = np.random.default_rng(0)
    for _ in range(5):
        S = random_symbols(rng, 400, 12)
        assert stats_of(S).estimate_bits() == pytest.approx(literal_bits(S), rel=1e-9)


def test_conditional_estimate_matches_literal_definition():
    rng = np.random.default_rng(1)
    parents = np.array([-1, -1, 0, 0, 2, 1, -1, 5], dtype=np.int64)
    for strict in (False, True):
        S = random_symbols(rng, 500, 8)
        if strict:  # child active only with its parent: the "parent off" term vanishes
            for i in (2, 3, 4, 5, 7):
                S[S[:, parents[i]] == 0, i] = 0
        st = stats_of(S, parents)
        assert st.estimate_bits() == pytest.approx(literal_bits(S, parents), rel=1e-9)
        assert st.estimate_bits(conditional=False) == pytest.approx(literal_bits(S), rel=1e-9)
        if strict:
            assert st.estimate_bits() < st.estimate_bits(conditional=False)


def test_binary_entropy_edges():
    np.testing.assert_allclose(binary_entropy(np.array([0, 0.5, 1])), [0, 1, 0])


@pytest.mark.parametrize("parents, match", [
    (np.array([-1, 5, 0]), r"parents\[1\] = 5"),
    (np.array([-1, 1, 0]), r"parents\[1\] = 1"),
    (np.array([2, 0, 1]), "cycle"),
    (np.array([-1, 0]), "shape"),
    (np.array([-1.0, 0, 0]), "integers"),
])
def test_bad_parents(parents, match):
    with pytest.raises(MdlsaeError, match=match):
        validate_parents(parents, 3)


def test_naive_bound_uses_fixed_length_values():
    from mdlsae.measure.entropy import naive_bits_per_row, value_bits_fixed

    assert [value_bits_fixed(q) for q in (1, 2, 8, 9, 256)] == [1, 1, 3, 4, 8]
    # the README's worked example: L0 = 10.24, values 1..8, D = 1024
    assert naive_bits_per_row(10.24, 1024, 8) == pytest.approx(10.24 * 13)
