"""MDL model selection: effective precision, per-feature steps, two-part DL and ``mdlsae select``.

The properties asserted are the contract: the cached evaluation is bit-identical to the fused
kernel's scan; the reported step is the coarsest meeting ε on a fine grid; per-feature steps meet
ε and are never worse than the best global step; the chosen SAE is the smallest DL among those
meeting ε, each at its own effective precision; bad input is one clear error line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import make_sae
from mdlsae import MdlsaeError
from mdlsae.selection.allocate import allocate_steps
from mdlsae.cli import main
from mdlsae.measure.entropy import FeatureStats
from mdlsae.measure import measure_dl, scan
from mdlsae.measure.kernels import select_quantize
from mdlsae.selection.precision import Evaluator, SparseLatents, effective_precision, select_sparse
from mdlsae.models.sae import SAE, SAEConfig
from mdlsae.selection import select_sae
from mdlsae.data import make_toy
from mdlsae.models.train import TrainConfig, train_sae
from mdlsae.measure.twopart import TwoPartDL, elias_gamma_bits, table_bits


@pytest.fixture(scope="module")
def trained(toy):
    """Small TopK SAEs trained on the shared toy data (a few seconds in all)."""
    return {f"D{d}_k{k}": train_sae(toy.x, TrainConfig(d_sae=d, k=k, epochs=5, seed=0))
            for d, k in [(16, 3), (48, 3), (48, 6), (128, 3)]}


@pytest.fixture(scope="module")
def wide_toy():
    """Toy data with little superposition, for hand-built JumpReLU SAEs on the true dictionary."""
    return make_toy(n_rows=3000, d=64, n_features=48, mean_active=3, seed=3)


def dictionary_sae(features: np.ndarray, scale: np.ndarray | None = None) -> SAE:
    """JumpReLU SAE on the true dictionary; ``scale`` multiplies decoder rows and divides the
    encoder, which changes the latents' units but not a single reconstruction."""
    c = torch.ones(len(features)) if scale is None else torch.from_numpy(scale.astype(np.float32))
    sae = SAE(SAEConfig("jumprelu", d_in=features.shape[1], d_sae=features.shape[0]))
    with torch.no_grad():
        sae.W_dec.copy_(torch.from_numpy(features) * c[:, None])
        sae.W_enc.copy_(torch.from_numpy(features).T / c)
        sae.threshold.copy_(0.25 / c)
    return sae


def midway_tolerance(ev: Evaluator, frac: float = 0.3) -> float:
    """A tolerance between the unquantized loss and the loss of sending nothing."""
    l0, nothing = ev.unquantized_loss(), ev.evaluate(np.float32(1e4)).loss
    return l0 + frac * (nothing - l0)


def same_stats(a: FeatureStats, b: FeatureStats) -> bool:
    return (a.n_rows == b.n_rows and np.array_equal(a.active, b.active) and np.array_equal(a.hist_ptr, b.hist_ptr)
            and np.array_equal(a.hist_q, b.hist_q) and np.array_equal(a.hist_count, b.hist_count))


# ------------------------------------------------------------------ cached evaluation == fused kernel
@pytest.mark.parametrize("arch", ["topk", "jumprelu", "relu"])
def test_cached_latents_reproduce_the_fused_kernel(toy, arch):
    sae = make_sae(arch)
    ev = Evaluator(SparseLatents.from_sae(toy.x, sae, batch_rows=700))
    rng = np.random.default_rng(0)
    for step in (0.013, 0.1, 0.7, rng.uniform(0.02, 0.5, 48).astype(np.float32)):
        stats, err = scan(toy.x, sae, step, batch_rows=1000)
        p = ev.evaluate(step)
        assert same_stats(p.stats, stats)
        assert p.loss == pytest.approx(err.mse, rel=1e-9)
        assert p.dl_bits_per_row == pytest.approx(stats.estimate_bits() / len(toy.x), rel=1e-12)


def test_topk_ties_break_like_the_kernel():
    """Exact ties at the k-th place go to the lower feature index, as in the fused kernel."""
    pre = torch.tensor([[1.0, 2.0, 2.0, 2.0, 0.5], [3.0, 1.0, 1.0, 0.0, 1.0], [-1.0, -1.0, 0.0, 0.0, 2.0]])
    r, c, v = select_sparse(pre, 2, None)
    codes = select_quantize(pre, k=2, step=1e-3)
    assert np.array_equal(np.repeat(np.arange(3), np.diff(codes.row_ptr)), r.numpy())
    assert np.array_equal(codes.index, c.numpy()) and np.array_equal(codes.q, np.rint(v.numpy() / np.float32(1e-3)))
    assert c.tolist() == [1, 2, 0, 1, 4]


def test_max_rows_takes_the_first_rows(toy):
    sae = make_sae("topk")
    lat = SparseLatents.from_sae(toy.x, sae, max_rows=1000, batch_rows=300)
    stats, _ = scan(toy.x[:1000], sae, 0.1)
    assert lat.n_rows == 1000 and same_stats(Evaluator(lat).evaluate(0.1).stats, stats)


# ------------------------------------------------------------------ effective precision
def test_step_is_the_coarsest_meeting_tolerance_on_a_fine_grid(toy, trained):
    for name in ("D48_k3", "D128_k3"):
        sae = trained[name]
        ev = Evaluator(SparseLatents.from_sae(toy.x, sae))
        tol = midway_tolerance(ev)
        prec = effective_precision(ev, tol, rel_tol=0.01)
        assert prec.meets and prec.point.loss <= tol
        assert prec.point.dl_bits_per_row == pytest.approx(measure_dl(toy.x, sae, prec.step).dl_bits_per_row, rel=1e-12)
        grid = prec.step * 1.01 ** np.arange(1, 200)  # up to ~7x coarser
        passing = [s for s in grid if ev.evaluate(np.float32(s)).loss <= tol]
        assert not passing or max(passing) <= prec.step * 1.02, (max(passing) / prec.step)


def test_unreachable_tolerance_is_reported_not_met(toy, trained):
    ev = Evaluator(SparseLatents.from_sae(toy.x, trained["D48_k3"]))
    prec = effective_precision(ev, ev.unquantized_loss() / 2)
    assert not prec.meets and prec.point.loss > prec.tolerance


def test_tolerance_met_by_sending_nothing(toy, trained):
    ev = Evaluator(SparseLatents.from_sae(toy.x, trained["D48_k3"]))
    prec = effective_precision(ev, 10 * ev.evaluate(np.float32(1e4)).loss)
    assert prec.meets and prec.point.l0 == 0 and prec.point.dl_bits_per_row == 0


def test_callable_loss_is_searched_like_the_builtin(toy, trained):
    lat = SparseLatents.from_sae(toy.x, trained["D48_k6"])
    tol = midway_tolerance(Evaluator(lat))

    def double_mse(x, x_hat):
        return 2 * float(((x.double() - x_hat.double()) ** 2).mean())

    a = effective_precision(Evaluator(lat, "mse"), tol)
    b = effective_precision(Evaluator(lat, double_mse), 2 * tol)
    assert a.step == b.step and b.point.loss == pytest.approx(2 * a.point.loss, rel=1e-9)
    fvu = effective_precision(Evaluator(lat, "fvu"), a.point.err.fvu)
    assert fvu.point.loss <= a.point.err.fvu and fvu.step >= a.step * 0.98


def test_bad_metric_and_tolerance_are_clear_errors(toy, trained):
    lat = SparseLatents.from_sae(toy.x, trained["D48_k3"])
    with pytest.raises(MdlsaeError, match="metric must be one of"):
        Evaluator(lat, "mae")
    with pytest.raises(MdlsaeError, match="tolerance must be positive"):
        effective_precision(Evaluator(lat), 0.0)
    with pytest.raises(MdlsaeError, match="d_in=64 but the SAE expects d_in=16"):
        SparseLatents.from_sae(np.zeros((5, 64), np.float32), trained["D48_k3"])


# ------------------------------------------------------------------ per-feature steps
def test_per_feature_meets_tolerance_and_is_never_worse(toy, trained):
    savings = []
    for sae in trained.values():
        lat = SparseLatents.from_sae(toy.x, sae)
        ev = Evaluator(lat)
        prec = effective_precision(ev, midway_tolerance(ev))
        alloc = allocate_steps(ev, prec)
        assert alloc.point.loss <= prec.tolerance
        assert alloc.point.dl_bits_per_row <= prec.point.dl_bits_per_row
        steps = alloc.steps
        assert steps.shape == (sae.d_sae,) and steps.dtype == np.float32 and (steps > 0).all()
        # checked for real with the fused kernel: same DL at these steps, loss within ε
        r = measure_dl(toy.x, sae, steps)
        assert r.dl_bits_per_row == pytest.approx(alloc.point.dl_bits_per_row, rel=1e-12)
        assert r.mse <= prec.tolerance
        savings.append(alloc.saving)
    assert max(savings) > 0.01, savings


def test_per_feature_steps_follow_feature_units(wide_toy):
    """Rescaling features (decoder rows × c, latents ÷ c) changes nothing in x-space: per-feature
    steps absorb it, a global step cannot."""
    scale = np.geomspace(0.1, 10, 48)[np.random.default_rng(0).permutation(48)]
    res = []
    for sae in (dictionary_sae(wide_toy.features), dictionary_sae(wide_toy.features, scale)):
        ev = Evaluator(SparseLatents.from_sae(wide_toy.x, sae))
        prec = effective_precision(ev, 0.025)
        res.append((prec, allocate_steps(ev, prec)))
    (g1, a1), (g2, a2) = res
    assert g2.point.dl_bits_per_row > 1.2 * g1.point.dl_bits_per_row  # the global step suffers
    assert a2.saving > 0.3 and a1.saving > 0.1
    assert a2.point.dl_bits_per_row == pytest.approx(a1.point.dl_bits_per_row, rel=0.05)


def test_per_feature_falls_back_to_the_global_step(toy):
    """One feature: no allocation can beat the coarsest passing global step."""
    sae = make_sae("relu", d_sae=1)
    ev = Evaluator(SparseLatents.from_sae(toy.x, sae))
    prec = effective_precision(ev, midway_tolerance(ev, 0.5))
    alloc = allocate_steps(ev, prec)
    assert prec.meets and alloc.point.dl_bits_per_row <= prec.point.dl_bits_per_row * (1 + 1e-12)
    if alloc.fallback:
        assert (alloc.steps == np.float32(prec.step)).all() and alloc.saving == 0


# ------------------------------------------------------------------ two-part DL
def test_table_bits_are_elias_gamma_sizes():
    assert elias_gamma_bits(np.array([1, 2, 3, 4, 7, 8, 1000])).tolist() == [1, 3, 3, 5, 5, 7, 19]
    # feature 0: active 5, values {1: 3, 4: 2}; feature 1: dead; feature 2: active 1, {2: 1}
    stats = FeatureStats(10, np.array([5, 0, 1]), np.array([0, 2, 2, 3]), np.array([1, 4, 2]), np.array([3, 2, 1]))
    want = (5 + 1 + 3) + (3 + 1 + 3)  # EG(active + 1), then EG(distinct + 1), of each feature
    want += (1 + 3) + (3 + 3) + (3 + 1)  # EG(q gap) + EG(count) of each histogram entry
    assert table_bits(stats) == want
    two = TwoPartDL.of(stats, d_in=7, per_feature_steps=True, decoder_precision=16)
    assert two.decoder_bits == 16 * 7 * (2 + 1)  # two live rows of W_dec, and b_dec
    assert two.step_bits == 3 * 32 and two.model_bits == want + 96 + two.decoder_bits
    at = [two.bits_per_row_at(n) for n in (10, 10 ** 3, 10 ** 6)]
    assert at[0] > at[1] > at[2] > two.data_bits_per_row and at[0] == pytest.approx(two.total_bits_per_row)
    assert TwoPartDL.of(stats, 7, False, 0).model_bits == want + 32


# ------------------------------------------------------------------ selection
@pytest.mark.slow
def test_select_picks_smallest_dl_meeting_tolerance_each_at_its_coarsest_step(toy, trained):
    cands = list(trained.items()) + [("random", make_sae("topk", k=3))]
    tol = 0.1  # between the trained SAEs' unquantized losses (0.084 ... 0.114) and the random one's
    sel = select_sae(toy.x, cands, tol)
    meeting = [c for c in sel.candidates if c.meets]
    assert 0 < len(meeting) < len(cands)  # the tolerance separates the candidates
    assert sel.chosen is min(meeting, key=lambda c: c.dl_bits_per_row)
    for c, (_, sae) in zip(sel.candidates, cands):
        r = measure_dl(toy.x, sae, c.step)  # the reported DL is the DL at the reported step
        assert c.dl_bits_per_row == pytest.approx(r.dl_bits_per_row, rel=1e-12)
        assert c.meets == (r.mse <= tol)
        if c.meets:  # ... and that step is the coarsest meeting ε on an independent 2 % grid
            grid = c.step * 1.02 ** np.arange(-60, 100)
            reps = [measure_dl(toy.x, sae, np.float32(s)) for s in grid]
            coarsest = max((r for r in reps if r.mse <= tol), key=lambda r: r.step)
            assert c.dl_bits_per_row == pytest.approx(coarsest.dl_bits_per_row, rel=0.03)


@pytest.fixture()
def sae_dirs(tmp_path, trained):
    dirs = []
    for name in ("D48_k3", "D128_k3", "D16_k3"):
        trained[name].save(tmp_path / name)
        dirs.append(tmp_path / name)
    return dirs


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_select_cli_json_schema(capsys, tmp_path, toy_npy, sae_dirs):
    code, out, err = run_cli(capsys, "select", toy_npy, "--sae", *sae_dirs, "--tolerance", 0.1, "--json")
    assert code == 0, err
    got = json.loads(out)
    assert set(got) >= {"chosen", "candidates", "tolerance", "metric", "criterion"}
    assert [c["sae"] for c in got["candidates"]] == [str(d) for d in sae_dirs]
    for c in got["candidates"]:
        assert {"sae", "dl_bits_per_row", "loss", "meets_tolerance", "step", "model_bits",
                "total_bits_per_row", "two_part"} <= set(c)
        assert isinstance(c["step"], float) and c["meets_tolerance"] == (c["loss"] <= 0.1)
        assert c["total_bits_per_row"] > c["dl_bits_per_row"]
    ok = [c for c in got["candidates"] if c["meets_tolerance"]]
    assert got["chosen"] == min(ok, key=lambda c: c["dl_bits_per_row"])["sae"]


def test_select_cli_per_feature_and_steps_out(capsys, tmp_path, toy_npy, sae_dirs):
    out_steps = tmp_path / "steps.npy"
    code, out, err = run_cli(capsys, "select", toy_npy, "--sae", *sae_dirs[:2], "--tolerance", 0.1,
                             "--per-feature", "--steps-out", out_steps, "--json")
    assert code == 0, err
    got = json.loads(out)
    for c in got["candidates"]:
        pf = c["per_feature"]
        assert c["dl_bits_per_row"] <= pf["global_dl_bits_per_row"] and 0 <= pf["saving"] < 1
        if not pf["fallback"]:
            assert c["step"]["per_feature"] is True and c["step"]["min"] <= c["step"]["max"]
    chosen = next(c for c in got["candidates"] if c["sae"] == got["chosen"])
    steps = np.load(out_steps)
    assert steps.dtype == np.float32 and steps.shape in ((), (chosen["d_sae"],))


def test_select_cli_table_and_criterion(capsys, toy_npy, sae_dirs):
    code, out, err = run_cli(capsys, "select", toy_npy, "--sae", *sae_dirs, "--tolerance", 0.1,
                             "--criterion", "total", "--max-rows", 2000)
    assert code == 0, err
    assert "chosen:" in out and "two-part total" in out and "2,000 rows" in out


def test_select_cli_no_candidate_meets(capsys, toy_npy, sae_dirs):
    code, out, err = run_cli(capsys, "select", toy_npy, "--sae", *sae_dirs, "--tolerance", 1e-6, "--json")
    got = json.loads(out)
    assert code == 1 and got["chosen"] is None and "no candidate meets" in err
    assert not any(c["meets_tolerance"] for c in got["candidates"])


def test_select_cli_bad_input(capsys, tmp_path, toy_npy, sae_dirs):
    np.save(tmp_path / "d8.npy", np.zeros((5, 8), np.float32))
    for argv, match in [
        ([toy_npy, "--sae", tmp_path / "missing", "--tolerance", 0.1], "does not exist"),
        ([tmp_path / "d8.npy", "--sae", sae_dirs[0], "--tolerance", 0.1], "d_in=8 but the SAE expects d_in=16"),
        ([tmp_path / "none.npy", "--sae", sae_dirs[0], "--tolerance", 0.1], "does not exist"),
    ]:
        code, out, err = run_cli(capsys, "select", *argv)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and lines[0].startswith("mdlsae: error:") and match in lines[0], err
    for tol in ("0", "-1", "nan"):
        with pytest.raises(SystemExit) as e:
            main(["select", str(toy_npy), "--sae", str(sae_dirs[0]), "--tolerance", tol])
        assert e.value.code != 0 and "--tolerance" in capsys.readouterr().err
