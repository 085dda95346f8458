"""Toy data with ground truth: structure (hierarchy, AND features, correlation) holds exactly,
rows are a deterministic prefix-stable stream, and MMCS scores a planted dictionary 1."""

from __future__ import annotations

import numpy as np
import pytest

from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.data import ToySpec, load_truth, make_toy, max_cosine, mmcs, write_toy


def test_plain_toy_statistics():
    t = make_toy(n_rows=20_000, d=32, n_features=64, mean_active=3, seed=1)
    assert t.x.shape == (20_000, 32) and t.coeffs.shape == (20_000, 64)
    np.testing.assert_allclose(np.linalg.norm(t.features, axis=1), 1, rtol=1e-5)
    assert (t.coeffs > 0).sum(1).mean() == pytest.approx(3, rel=0.03)
    active = t.coeffs[t.coeffs > 0]
    assert active.min() >= 0.5 and active.max() <= 1.5
    np.testing.assert_allclose(t.x, t.coeffs @ t.features, atol=1e-5)
    assert (np.diff(t.rates[:10]) < 0.02).all()  # power law: the first features fire most
    assert (t.parents == -1).all() and t.and_pairs.shape == (0, 2)


def test_rows_are_a_prefix_stable_stream():
    a = make_toy(n_rows=20_000, d=8, n_features=16, mean_active=2, noise=0.01, seed=5)
    b = make_toy(n_rows=9_000, d=8, n_features=16, mean_active=2, noise=0.01, seed=5)
    np.testing.assert_array_equal(a.x[:9_000], b.x)
    c = make_toy(n_rows=9_000, d=8, n_features=16, mean_active=2, noise=0.01, seed=6)
    assert not np.array_equal(b.x, c.x)


def test_hierarchy_and_composites_hold_exactly():
    t = make_toy(n_rows=30_000, d=32, n_features=80, mean_active=4, n_parents=6, children=3, n_and=5, seed=2)
    on = t.coeffs > 0
    spec = ToySpec(d=32, n_features=80, mean_active=4, n_parents=6, children=3, n_and=5)
    kids = np.flatnonzero(t.parents >= 0)
    assert len(kids) == 18 and (t.parents[kids] < spec.n_base).all()
    assert not (on[:, kids] & ~on[:, t.parents[kids]]).any()  # a child fires only with its parent
    for p in range(6):  # at most one child per parent, and children do fire
        assert on[:, t.parents == p].sum(1).max() == 1
    assert on[:, kids].any(0).all()
    comp = np.arange(80 - 5, 80)
    np.testing.assert_array_equal(on[:, comp], on[:, t.and_pairs[:, 0]] & on[:, t.and_pairs[:, 1]])
    assert on[:, comp].any(0).all()


def test_correlation_makes_group_members_co_fire():
    kw = dict(n_rows=40_000, d=16, n_features=32, mean_active=4, exponent=0.0, seed=3)
    on0 = make_toy(**kw).coeffs > 0
    on1 = make_toy(correlation=0.8, group=4, **kw).coeffs > 0
    both = lambda on, i, j: (on[:, i] & on[:, j]).mean() / (on[:, i].mean() * on[:, j].mean())
    assert both(on0, 0, 1) == pytest.approx(1, abs=0.15)  # independent
    assert both(on1, 0, 1) > 2.5  # same group: lift well above 1
    assert both(on1, 0, 4) == pytest.approx(1, abs=0.15)  # different groups
    assert on1.mean() == pytest.approx(on0.mean(), rel=0.05)  # rates are kept


def test_mmcs_of_planted_and_random_dictionaries():
    t = make_toy(n_rows=10, d=32, n_features=64, seed=0)
    perm = np.random.default_rng(0).permutation(64)
    extra = np.random.default_rng(1).standard_normal((30, 32))
    planted = np.concatenate([3 * t.features[perm], extra])  # any order, any norm, extra rows
    assert mmcs(planted, t.features) == pytest.approx(1.0, abs=1e-6)
    assert mmcs(extra, t.features) < 0.7
    half = max_cosine(t.features[:32], t.features)
    np.testing.assert_allclose(half[:32], 1, atol=1e-6)
    assert (half[32:] < 0.999).all()
    with pytest.raises(MdlsaeError, match="same d"):
        mmcs(np.ones((4, 5)), t.features)


def test_write_toy_streams_the_same_rows(tmp_path):
    spec = ToySpec(d=16, n_features=40, mean_active=3, n_parents=2, n_and=2)
    truth = write_toy(tmp_path / "a.npy", 20_000, spec, seed=4, truth_path=tmp_path / "t.safetensors")
    ref = make_toy(n_rows=20_000, seed=4, d=16, n_features=40, mean_active=3, n_parents=2, n_and=2)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), ref.x)
    np.testing.assert_array_equal(load_truth(tmp_path / "t.safetensors"), ref.features)
    np.testing.assert_allclose(truth["rates"], ref.rates)
    np.testing.assert_array_equal(truth["parents"], ref.parents)


@pytest.mark.parametrize("kw, match", [
    (dict(mean_active=300), "mean_active"),
    (dict(n_parents=200, children=2), "base features"),
    (dict(correlation=1.0), "correlation"),
    (dict(mag_min=2, mag_max=1), "mag_min"),
    (dict(n_features=60, n_and=50), "n_and=50 exceeds"),
])
def test_bad_toy_specs(kw, match):
    with pytest.raises(MdlsaeError, match=match):
        make_toy(n_rows=10, **kw)


def test_toy_cli(tmp_path, capsys):
    out = tmp_path / "toy.npy"
    assert main(["toy", "make", "-o", str(out), "--rows", "3000", "--d", "16", "--features", "32",
                 "--parents", "2", "--and-features", "1", "--float16", "--no-progress"]) == 0
    x = np.load(out)
    assert x.shape == (3000, 16) and x.dtype == np.float16
    assert (tmp_path / "toy.truth.safetensors").is_file()
    assert main(["toy", "mmcs", "--sae", str(tmp_path / "missing"), "--truth", str(tmp_path / "toy.truth.safetensors")]) == 1
    assert "does not exist" in capsys.readouterr().err
