"""The feature-splitting toy (seed 002 §7): the analytic DL of both codes equals the package's
estimator on sampled rows, the split code always has the smaller L0 but not always the smaller
DL, and the phase boundary is where the two DLs are equal."""

from __future__ import annotations

import numpy as np
import pytest

from mdlsae import MdlsaeError
from mdlsae.selection import evaluate_sae
from mdlsae.studies.splitting import (analytic_dl, boundary_rho, encoded_file_bits, p_and, phase_grid, sample_rows,
                              split_saes)


@pytest.mark.parametrize("p,rho", [(0.05, 0.0), (0.05, 0.6), (0.2, 0.3)])
def test_estimator_equals_formula_on_sampled_rows(p, rho):
    x, a, b, f = sample_rows(20_000, p, p, rho, seed=1)
    two, three = split_saes(f)
    want = analytic_dl(a.mean(), b.mean(), (a & b).mean())  # the formula on the sample's frequencies
    eps = 1e-3 * float((x ** 2).mean())
    got = []
    for sae in (two, three):
        c = evaluate_sae(x, sae, eps)
        assert c.meets and c.precision.unquantized_loss < 1e-10  # both SAEs are exact
        got.append(c)
    assert got[0].dl_bits_per_row == pytest.approx(float(want[0]), rel=1e-9)
    assert got[1].dl_bits_per_row == pytest.approx(float(want[1]), rel=1e-9)
    assert got[1].report.l0 < got[0].report.l0  # splitting always lowers L0


def test_phase_boundary():
    ps = np.array([0.003, 0.03, 0.1, 0.3])
    rho = np.array([boundary_rho(p) for p in ps])
    assert (np.diff(rho) > 0).all() and (rho > 0).all() and rho[-1] < 0.5
    for p, r in zip(ps, rho):
        below, above = (analytic_dl(p, p, p_and(p, p, v)) for v in (0.9 * r, 1.1 * r))
        assert below[0] < below[1] and above[0] > above[1]
    grid = phase_grid(ps, np.array([-0.9, 0.0, 0.99]))
    assert np.isnan(grid[0]).all()  # ρ = -0.9 is impossible for p <= 0.3 (P(A∧B) would be < 0)
    assert (grid[1] < 0).all() and (grid[2] > 0).all()  # independent: no split; near-identical: split


def test_infeasible_correlation_is_a_clear_error():
    with pytest.raises(MdlsaeError, match="no boolean pair"):
        sample_rows(10, 0.1, 0.1, -0.5)


@pytest.mark.parametrize("p,rho", [(0.1, 0.0), (0.1, 0.6)])
def test_real_file_confirms_the_analytic_dl(p, rho):
    """Both SAEs' codes encoded into real .mdl files: the payload is the analytic DL on the
    sample's frequencies plus a bounded per-stream overhead, and the split gain measured on the
    files has the sign of the law (ρ = 0: don't split; ρ = 0.6: split)."""
    rows = 20_000
    x, a, b, f = sample_rows(rows, p, p, rho, seed=2)
    want = analytic_dl(a.mean(), b.mean(), (a & b).mean())
    eps = 1e-3 * float((x ** 2).mean())
    files = []
    for sae, dl in zip(split_saes(f), want):
        c = evaluate_sae(x, sae, eps)
        fb = encoded_file_bits(x, sae, c.precision.step)
        assert fb.n_rows == rows and fb.n_streams == 1 and fb.model_bits > 0
        assert fb.estimate_bits == pytest.approx(rows * float(dl), rel=1e-9)  # the file's own entropy model
        assert abs(fb.payload_bits - fb.estimate_bits) <= 1e-3 * fb.estimate_bits + 256  # DESIGN §3
        files.append(fb)
    gain_file = files[0].payload_bits_per_row - files[1].payload_bits_per_row
    law = analytic_dl(p, p, p_and(p, p, rho))
    assert np.sign(gain_file) == np.sign(law[0] - law[1]) and abs(law[0] - law[1]) > 0.005
    assert gain_file == pytest.approx(float(want[0] - want[1]), abs=300 / rows)
