"""Parent discovery (measure/forest.py): exact pair counts, the information of an edge equal to
the DL it saves, the forest equal to exhaustive Chow–Liu, planted trees recovered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mdlsae import MdlsaeError
from mdlsae._native import _C
from mdlsae.data import make_toy
from mdlsae.measure.codes import SparseCodes
from mdlsae.measure.entropy import FeatureStats, parent_cooccurrence
from mdlsae.measure.forest import discover_parents, edge_bits, forest_of_codes
from mdlsae.measure.kernels import Histogram, select_quantize
from conftest import make_sae


def codes_of(act: np.ndarray) -> SparseCodes:
    rows, cols = np.nonzero(act)
    ptr = np.concatenate([[0], np.cumsum(act.sum(1))]).astype(np.int64)
    return SparseCodes(ptr, cols.astype(np.int32), np.ones(len(cols), dtype=np.int32), act.shape[1])


def correlated_activity(rng, n, d):
    """Features driven by a few hidden causes: rich, overlapping co-activity."""
    causes = rng.random((n, 6)) < 0.2
    w = rng.random((6, d)) < 0.3
    return ((causes @ w) > 0) & (rng.random((n, d)) < 0.7) | (rng.random((n, d)) < 0.02)


def stats_of(codes: SparseCodes, parents=None) -> FeatureStats:
    h = Histogram(codes.d_sae)
    h.add_codes(codes.index, codes.q, codes.n_rows)
    ptr, q, count = h.to_csr()
    wp = parent_cooccurrence(codes, parents) if parents is not None else None
    return FeatureStats(codes.n_rows, h.active_counts(), ptr, q, count, parents, wp)


def plug_in_bits(a, b):
    n, out = len(a), 0.0
    for x in (0, 1):
        for y in (0, 1):
            c = np.sum((a == x) & (b == y))
            if c:
                out += c * np.log2(c * n / (np.sum(a == x) * np.sum(b == y)))
    return out


def test_pair_counts_and_information_exact():
    rng = np.random.default_rng(0)
    act = correlated_activity(rng, 3000, 37)
    codes = codes_of(act)
    dense = act.astype(np.int64).T @ act.astype(np.int64)
    active = act.sum(0).astype(np.int64)
    for lo, hi in ((0, 37), (5, 9), (36, 37)):
        pc = _C.PairCounter(37, lo, hi)
        for a in range(0, 3000, 700):  # several batches
            part = codes.slice(a, min(3000, a + 700))
            pc.add(part.row_ptr, part.index)
        i, j, bits, both = pc.top_edges(active, 3000, 37)  # k = d: every pair is a candidate
        assert np.all((i >= lo) & (i < hi) & (j > i))
        assert len(i) == sum(37 - f - 1 for f in range(lo, hi))
        np.testing.assert_array_equal(both, dense[i, j])
        for e in range(0, len(i), 7):
            assert bits[e] == pytest.approx(plug_in_bits(act[:, i[e]], act[:, j[e]]), rel=1e-9, abs=1e-9)


def test_saving_is_the_dl_difference_and_matches_exhaustive_chow_liu():
    rng = np.random.default_rng(1)
    codes = codes_of(correlated_activity(rng, 5000, 40))
    full = forest_of_codes(codes, k=40)  # every pair a candidate: exact Chow–Liu with edge costs
    flat, cond = stats_of(codes).estimate_bits(False), stats_of(codes, full.parents).estimate_bits()
    assert flat - cond == pytest.approx(full.gain_bits.sum(), rel=1e-9)
    assert (full.gain_bits[full.children] > edge_bits(40, full.both[full.children])).all()  # each edge pays
    # brute force: Kruskal over all pairs in Python gives the same total gain
    act = np.zeros((5000, 40), dtype=bool)
    act[codes.rows(), codes.index] = True
    w = [(plug_in_bits(act[:, a], act[:, b]) - edge_bits(40, np.sum(act[:, a] & act[:, b])), a, b)
         for a in range(40) for b in range(a + 1, 40)]
    up, total = list(range(40)), 0.0

    def find(x):
        while up[x] != x:
            x = up[x]
        return x
    for g, a, b in sorted(w, reverse=True):
        if g > 0 and find(a) != find(b):
            up[find(a)] = find(b)
            total += g
    net = full.gain_bits[full.children] - edge_bits(40, full.both[full.children])
    assert net.sum() == pytest.approx(total, rel=1e-9)
    pruned = forest_of_codes(codes, k=4)
    assert pruned.gain_bits.sum() >= 0.999 * full.gain_bits.sum()


@pytest.mark.parametrize("leak", [0.0, 0.05])
def test_planted_trees_recovered(leak):
    toy = make_toy(n_rows=100_000, seed=3, d=64, n_features=256, mean_active=3, n_parents=40, children=2,
                   child_rate=0.6, child_leak=leak)
    codes = select_quantize(torch.from_numpy(toy.coeffs), k=0, step=0.05)
    f = forest_of_codes(codes)
    planted = {frozenset((c, toy.parents[c])) for c in np.flatnonzero(toy.parents >= 0)}
    found = {frozenset((c, f.parents[c])) for c in f.children}
    assert len(planted & found) >= 0.95 * len(planted)
    dl_planted = stats_of(codes, toy.parents).estimate_bits()
    assert stats_of(codes, f.parents).estimate_bits() <= 1.005 * dl_planted
    s = f.summary()
    assert (s["strictness_median"] == 1.0) == (leak == 0)


def test_multi_level_planted_trees():
    # Animal -> Bird -> Sparrow: 20 roots, 2 children each, 2 grandchildren per child; strict
    toy = make_toy(n_rows=100_000, seed=4, d=64, n_features=256, mean_active=3, n_parents=20, children=2,
                   child_rate=0.7, levels=2)
    par = toy.parents
    assert (par >= 0).sum() == 20 * (2 + 4) and (par[par[par >= 0]] >= 0).sum() == 80  # 80 grandchildren
    on = toy.coeffs > 0
    kids = np.flatnonzero(par >= 0)
    assert not (on[:, kids] & ~on[:, par[kids]]).any()  # strict: never without the parent
    codes = select_quantize(torch.from_numpy(toy.coeffs), k=0, step=0.05)
    f = forest_of_codes(codes)
    planted = {frozenset((c, par[c])) for c in kids}
    found = {frozenset((c, f.parents[c])) for c in f.children}
    assert len(planted & found) >= 0.95 * len(planted)
    assert f.summary()["max_depth"] >= 2


def test_hierarchy_recovery_sees_absorption():
    from mdlsae.data import hierarchy_recovery

    toy = make_toy(n_rows=20_000, seed=5, d=64, n_features=96, mean_active=3, n_parents=8, children=2,
                   child_rate=0.7)
    on = toy.coeffs > 0
    exact = hierarchy_recovery(toy.features, on, toy)
    assert exact["pairs_recovered"] == 1.0 and exact["parent_absorbed"] == 0 and exact["child_leak"] == 0
    absorbing = on.copy()  # the parent's latent goes silent whenever a child fires
    kids = np.flatnonzero(toy.parents >= 0)
    for c in kids:
        absorbing[on[:, c], toy.parents[c]] = False
    assert hierarchy_recovery(toy.features, absorbing, toy)["parent_absorbed"] == 1.0
    noisy = hierarchy_recovery(toy.features + 0.5 * np.random.default_rng(0).standard_normal(toy.features.shape),
                               on, toy)
    assert noisy["pairs_recovered"] < 0.5  # directions too far from the planted ones
    with pytest.raises(MdlsaeError, match="active must be"):
        hierarchy_recovery(toy.features, on[:, :10], toy)


def test_hierarchy_recovery_checks_the_learned_forest():
    from mdlsae.data import hierarchy_recovery

    toy = make_toy(n_rows=5_000, seed=5, d=64, n_features=96, mean_active=3, n_parents=8, children=2,
                   child_rate=0.7)
    on, kids = toy.coeffs > 0, np.flatnonzero(toy.parents >= 0)
    perm = np.random.default_rng(1).permutation(len(toy.features))  # latents in another order
    learned, forest = toy.features[perm], np.full(len(perm), -1)
    inv = np.argsort(perm)
    forest[inv[kids]] = inv[toy.parents[kids]]
    assert hierarchy_recovery(learned, on[:, perm], toy, parents=forest)["pairs_in_forest"] == 1.0
    wrong = forest.copy()
    wrong[inv[kids[:3]]] = -1  # three children moved to the roots
    assert hierarchy_recovery(learned, on[:, perm], toy, parents=wrong)["pairs_in_forest"] == 1 - 3 / len(kids)
    with pytest.raises(MdlsaeError, match="parents must be"):
        hierarchy_recovery(learned, on[:, perm], toy, parents=forest[:5])


def test_discover_from_an_sae_within_a_small_budget(monkeypatch):
    sae = make_sae("topk", d_in=16, d_sae=64, k=6, seed=4)
    x = torch.randn(4000, 16, generator=torch.Generator().manual_seed(5))
    whole = discover_parents(x, sae, step=0.1)
    # 8 features per count block, and the codes spilled to a file
    monkeypatch.setattr("mdlsae.measure.forest.budget_bytes", lambda: 4096)
    small = discover_parents(x, sae, step=0.1)
    np.testing.assert_array_equal(small.parents, whole.parents)
    assert small.candidates >= whole.candidates  # per-block column candidates add up
    part = discover_parents(x, sae, step=0.1, start=1000, stop=3000)
    assert part.n_rows == 2000


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="feature block"):
        _C.PairCounter(10, 5, 11)
    pc = _C.PairCounter(4, 0, 4)
    with pytest.raises(ValueError, match="increasing features"):
        pc.add(np.array([0, 2], dtype=np.int64), np.array([3, 1], dtype=np.int32))
    with pytest.raises(ValueError, match="active has 3 entries"):
        pc.top_edges(np.zeros(3, dtype=np.int64), 10, 2)


def test_cli_parents_auto_and_inspect(tmp_path, capsys):
    import json

    from mdlsae.cli import main

    toy = make_toy(n_rows=20_000, seed=6, d=32, n_features=64, mean_active=3, n_parents=10, children=2,
                   child_rate=0.7)
    np.save(tmp_path / "x.npy", toy.x)
    sae = make_sae("topk", d_in=32, d_sae=64, k=5, seed=7)
    sae.save(tmp_path / "sae")
    base = [str(tmp_path / "x.npy"), "--sae", str(tmp_path / "sae"), "--step", "0.05", "--no-progress"]
    assert main(["parents", *base, "--fit", "0.7", "-o", str(tmp_path / "p.npy"), "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    parents = np.load(tmp_path / "p.npy")
    assert parents.dtype == np.int64 and parents.shape == (64,) and rep["edges"] == int((parents >= 0).sum())
    held = rep["held_out"]
    assert held["rows"] == 6000 and held["forest_bits_per_row"] < held["flat_bits_per_row"]
    assert main(["dl", *base, "--parents", "auto", "--json"]) == 0
    dl = json.loads(capsys.readouterr().out)
    assert dl["conditional"] and dl["dl_bits_per_row"] < dl["flat_dl_bits_per_row"] and dl["forest"]["edges"] > 0
    assert main(["encode", *base, "--parents", "auto", "-o", str(tmp_path / "a.mdl")]) == 0
    assert main(["inspect", str(tmp_path / "a.mdl"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert info["forest"]["edges"] == dl["forest"]["edges"]
    assert info["forest"]["flat_estimate_bits"] > info["estimate_bits"]


def test_select_with_forests_pays_for_them():
    from mdlsae.selection.precision import SparseLatents
    from mdlsae.selection.select import select_sae

    toy = make_toy(n_rows=20_000, seed=8, d=32, n_features=64, mean_active=3, n_parents=10, children=2,
                   child_rate=0.7)
    saes = [("a", make_sae("topk", d_in=32, d_sae=64, k=5, seed=9)), ("b", make_sae("topk", d_in=32, d_sae=48,
                                                                                   k=4, seed=10))]
    lat = SparseLatents.from_sae(toy.x, saes[0][1])
    assert lat.codes(lat.quantize_values(np.float32(0.05))) == select_quantize(
        saes[0][1].pre_acts(torch.from_numpy(toy.x)).detach(), k=5, step=0.05)
    flat = select_sae(toy.x, saes, tolerance=0.1)  # finer than these random SAEs reach: the finest steps
    tree = select_sae(toy.x, saes, tolerance=0.1, parents="auto")
    assert all(c.report.l0 > 0 for c in flat.candidates)
    for f, t in zip(flat.candidates, tree.candidates):
        assert t.precision.step == f.precision.step  # a forest changes the bits, not the loss
        assert t.report.flat_dl_bits_per_row == pytest.approx(f.dl_bits_per_row)
        assert t.dl_bits_per_row < f.dl_bits_per_row
        assert t.two_part.forest_bits > 0 and t.two_part.model_bits == f.two_part.model_bits + t.two_part.forest_bits
    assert "edges" in tree.table()
