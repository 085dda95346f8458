"""The strict-tree SAE: its forest checks, the native selection against the torch reference,
its save/load round trip (forest in cfg.json and the weights file), and that dl/encode code its
children given their parents without a parents file, with the off-parent part empty."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from mdlsae.codec import decode, encode
from mdlsae.codec.api import stats_from_model
from mdlsae.codec.container import MdlFile
from mdlsae.errors import MdlsaeError
from mdlsae.measure import reference
from mdlsae.measure.dl import measure_dl
from mdlsae.measure.kernels import select_quantize
from mdlsae.models.sae import SAE, SAEConfig
from mdlsae.models.train import TrainConfig, train
from mdlsae.models.tree import TreeRule, regular_branching, regular_forest, tree_depth, validate_parents


def tree_sae(d_in=16, d_sae=42, branching=(2, 2), k=2, seed=0) -> SAE:
    cfg = SAEConfig("tree", d_in=d_in, d_sae=d_sae, k=k, parents=regular_forest(d_sae, list(branching)))
    sae = SAE.random(cfg, seed=seed)
    with torch.no_grad():
        sae.b_enc.normal_(0, 0.3, generator=torch.Generator().manual_seed(seed))
    return sae


def test_regular_forest_layout():
    p = regular_forest(14, [2, 2])  # 2 roots, 4 children, 8 grandchildren
    assert p.tolist() == [-1, -1, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert tree_depth(p).max() == 2
    with pytest.raises(MdlsaeError, match="does not divide"):
        regular_forest(15, [2, 2])


def test_cycles_are_refused_in_linear_time():
    p = np.arange(1, 200_001) % 200_000  # one cycle through every node: never reaches a root
    assert tree_depth(p) is None
    with pytest.raises(MdlsaeError, match="cycle"):
        validate_parents(p, 200_000)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("d_sae,branching,k", [(42, [2, 2], 2), (5000, [4], 12), (3100, [30], 3)])
def test_native_tree_selection_matches_reference(dtype, d_sae, branching, k):
    g = torch.Generator().manual_seed(d_sae)
    parents = regular_forest(d_sae, branching)
    pre = torch.randn(300, d_sae, generator=g).to(dtype)
    bias = torch.randn(d_sae, generator=g)
    got = select_quantize(pre, k=k, step=0.05, bias=bias, parents=parents)
    assert got == reference.select_quantize(pre.float(), k=k, step=0.05, bias=bias, parents=parents)
    # strict: every active child's parent is active in the unquantized selection
    mask = reference.select_quantize(pre.float(), k=k, step=1e-4, bias=bias, parents=parents)
    rows = mask.rows()
    on = set(zip(rows.tolist(), mask.index.tolist()))
    assert all((r, parents[f]) in on for r, f in on if parents[f] >= 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("d_sae,branching", [(42, [2, 2]), (5000, [4]), (3100, [30])])
def test_native_threshold_tree_matches_reference(dtype, d_sae, branching):
    # a tree without k: roots above their threshold, the strongest child above its own
    g = torch.Generator().manual_seed(d_sae + 1)
    parents = regular_forest(d_sae, branching)
    pre = torch.randn(300, d_sae, generator=g).to(dtype)
    bias = torch.randn(d_sae, generator=g) * 0.3
    thr = torch.rand(d_sae, generator=g) * 1.5 - 0.2  # some below 0: ReLU still applies
    got = select_quantize(pre, threshold=thr, step=0.05, bias=bias, parents=parents)
    assert got == reference.select_quantize(pre.float(), threshold=thr, step=0.05, bias=bias, parents=parents)
    x = pre.float() + bias
    on = TreeRule(torch.from_numpy(parents), general=True).mask(x, None, threshold=thr)
    kids = np.flatnonzero(parents >= 0)
    assert not (on[:, kids] & ~on[:, parents[kids]]).any()  # strict
    assert (x[on] > thr.expand_as(x)[on].clamp_min(0)).all()
    n_roots = on[:, parents < 0].sum(1).float()
    assert 0 < n_roots.mean() < (parents < 0).sum() and n_roots.std() > 0  # thresholds, not a k


@pytest.mark.parametrize("d_sae,branching,k", [(42, [2, 2], 2), (5000, [4], 12), (3100, [30], 3), (44, [2, 1, 3], 3)])
def test_regular_fast_path_equals_the_general_rule(d_sae, branching, k):
    parents = regular_forest(d_sae, branching)
    assert regular_branching(parents) == branching
    fast, general = TreeRule(torch.from_numpy(parents)), TreeRule(torch.from_numpy(parents), general=True)
    assert fast.levels and not general.levels
    g = torch.Generator().manual_seed(d_sae)
    pre = torch.randn(400, d_sae, generator=g)
    ties = torch.round(pre * 2) / 2  # many equal siblings and roots: the lower index must win
    for x in (pre, ties):
        assert torch.equal(fast.mask(x, k), general.mask(x, k))
    loose = fast.mask(pre, k, exact_ties=False)  # training's tie rule: same where nothing ties
    assert torch.equal(loose, general.mask(pre, k))
    thr = torch.rand(d_sae, generator=g)
    for x in (pre, ties):
        assert torch.equal(fast.mask(x, None, threshold=thr), general.mask(x, None, threshold=thr))
    with pytest.raises(MdlsaeError, match="exactly one"):
        fast.mask(pre, k, threshold=thr)


def test_irregular_forests_take_the_general_path():
    regular = regular_forest(14, [2, 2])
    for parents in ([-1, 0, 0, -1, 3], [-1, -1, 0, 0, 1], [-1, 2, 0, 0], np.full(5, -1),
                    np.r_[regular[:-1], 0]):
        assert regular_branching(np.asarray(parents)) is None
    assert regular_branching(np.array([-1, -1, 0, 1])) == [1]


@pytest.mark.parametrize("parents", [[-1, 0, 0, 1, -1, 4], [-1, -1, 0, 0, 1, 1]])
def test_a_nan_sibling_leaves_its_parent_childless_as_in_the_reference(parents):
    parents = np.array(parents)
    pre = torch.tensor([[1.0, float("nan"), 0.5, 0.7, 1.0, 0.3]])
    for kw in ({"k": 2}, {"threshold": np.zeros(6, np.float32)}):
        got = select_quantize(pre, step=0.01, parents=parents, **kw)
        assert got == reference.select_quantize(pre, step=0.01, parents=parents, **kw)


def test_ties_go_to_the_lower_child():
    parents = np.array([-1, 0, 0, 0])
    pre = torch.tensor([[1.0, 0.5, 0.7, 0.7]])
    codes = select_quantize(pre, k=1, step=0.01, parents=parents)
    assert codes.index.tolist() == [0, 2]
    assert codes == reference.select_quantize(pre, k=1, step=0.01, parents=parents)


def test_threshold_tree_saves_loads_and_codes(tmp_path):
    cfg = SAEConfig("tree", d_in=16, d_sae=42, parents=regular_forest(42, [2, 2]))  # no k: thresholds
    sae = SAE.random(cfg, seed=3)
    with torch.no_grad():
        sae.threshold.fill_(0.2)
    sae.save(tmp_path / "t")
    saved = json.loads((tmp_path / "t" / "cfg.json").read_text())
    assert "k" not in saved and saved["architecture"] == "tree"
    back = SAE.load(tmp_path / "t")
    assert back.cfg.k is None and torch.equal(back.threshold, sae.threshold)
    assert back.content_hash() == sae.content_hash() != tree_sae().content_hash()
    x = torch.randn(400, 16, generator=torch.Generator().manual_seed(4))
    z = back.encode(x)
    assert torch.equal(z, sae.encode(x)) and ((z > 0).sum(1) > 0).any()
    k, thr, parents = back.selection()
    codes = select_quantize(back.pre_acts(x), threshold=thr, step=0.05, parents=parents)
    assert codes == reference.select_quantize(back.pre_acts(x), threshold=thr, step=0.05, parents=parents)
    rep = measure_dl(x, back, step=0.05)  # coded given its own forest
    assert rep.conditional and rep.dl_bits_per_row < rep.flat_dl_bits_per_row
    info = encode(x, back, tmp_path / "t.mdl", step=0.05)
    assert info.conditional and info.payload_bits == pytest.approx(info.estimate_bits, rel=2e-3, abs=2000)


def test_save_load_round_trip_and_forest_checks(tmp_path):
    sae = tree_sae()
    sae.save(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "cfg.json").read_text())
    assert cfg["architecture"] == "tree" and cfg["parents"] == sae.cfg.parents.tolist()
    back = SAE.load(tmp_path / "t")
    assert back.content_hash() == sae.content_hash()
    x = torch.randn(50, 16)
    assert torch.equal(back.encode(x), sae.encode(x))
    cfg["parents"][10] = -1  # a different forest in cfg.json than in the weights file
    (tmp_path / "t" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(MdlsaeError, match="differs from the one in cfg.json"):
        SAE.load(tmp_path / "t")
    cfg.pop("parents")
    (tmp_path / "t" / "cfg.json").write_text(json.dumps(cfg))
    with pytest.raises(MdlsaeError, match="without its forest"):
        SAE.load(tmp_path / "t")
    cfg["parents"] = sae.cfg.parents.tolist()
    for bad in ("abc", 2.5, True, 0):
        cfg["k"] = bad
        (tmp_path / "t" / "cfg.json").write_text(json.dumps(cfg))
        with pytest.raises(MdlsaeError, match="expected a positive integer"):
            SAE.load(tmp_path / "t")


def test_encode_matches_the_fused_kernel():
    sae = tree_sae()
    x = torch.randn(200, 16)
    k, thr, parents = sae.selection()
    with torch.no_grad():
        z = sae.encode(x)
        codes = select_quantize(sae.pre_acts(x), k=k, step=1e-4, parents=parents)
    assert np.array_equal(np.flatnonzero(z.flatten().numpy() > 1e-4 / 2),
                          codes.rows() * sae.d_sae + codes.index)


def test_dl_and_file_are_conditional_on_the_own_forest(tmp_path):
    sae = tree_sae(d_sae=70, k=3)
    x = torch.randn(3000, 16)
    rep = measure_dl(x, sae, step=0.05)
    assert rep.conditional and rep.dl_bits_per_row < rep.flat_dl_bits_per_row
    info = encode(x, sae, tmp_path / "t.mdl", step=0.05)
    assert info.conditional
    assert info.payload_bits == pytest.approx(info.estimate_bits, rel=2e-3, abs=2000)
    # its own forest's siblings are exclusive: the file codes them so, and says it
    f = MdlFile(tmp_path / "t.mdl")
    assert f.meta["exclusive_siblings"] and f.model.exclusive
    assert info.estimate_bits == pytest.approx(rep.dl_bits_per_row * 3000, rel=1e-12)
    assert decode(tmp_path / "t.mdl", sae).codes == select_quantize(sae.pre_acts(x).detach(), k=3, step=0.05,
                                                                    parents=sae.cfg.parents)
    stats = stats_from_model(f.model)
    assert stats.exclusive and dataclasses.replace(stats, exclusive=False).estimate_bits() > info.estimate_bits


@pytest.mark.parametrize("arch", ["tree", "batchtree"])
def test_train_tree_from_scratch_is_strict(arch):
    x = torch.randn(4000, 16)
    res = train(x, TrainConfig(architecture=arch, d_sae=35, k=2, branching=[4], epochs=1, seed=0))
    sae = res.sae
    assert sae.cfg.architecture == "tree" and (sae.cfg.parents >= 0).sum() == 28
    with pytest.raises(MdlsaeError, match="init SAE is 'relu'"):  # only a tree may start a batchtree
        train(x, TrainConfig(architecture="batchtopk", d_sae=35, k=2, epochs=1), init=SAE.random(
            SAEConfig("relu", d_in=16, d_sae=35)))
    if arch == "batchtree":  # saved with one calibrated threshold instead of k: L0 about k per row
        assert sae.cfg.k is None and torch.all(sae.threshold == sae.threshold[0]) and sae.threshold[0] > 0
        assert res.stats["l0"] == pytest.approx(2, rel=0.35)
    with torch.no_grad():
        on = sae.encode(x) > 0
    kids = np.flatnonzero(sae.cfg.parents >= 0)
    assert not (on[:, kids] & ~on[:, sae.cfg.parents[kids]]).any()


@pytest.mark.parametrize("general", [False, True])
def test_batch_budget_is_k_per_row_strict_and_a_threshold(general):
    from mdlsae.models.train.objectives.tree import tree_budget_mask

    parents = regular_forest(63, [2, 2])
    rule = TreeRule(torch.from_numpy(parents), general=general)
    pre = torch.randn(512, 63, generator=torch.Generator().manual_seed(5))
    keep = tree_budget_mask(rule, pre, 3)
    assert 0 <= keep.sum() - 3 * 512 <= 4  # the budget, plus children tied with their parent at the cut
    kids = np.flatnonzero(parents >= 0)
    assert not (keep[:, kids] & ~keep[:, parents[kids]]).any()
    assert keep.sum(1).float().std() > 0  # the budget is the batch's, not each row's
    # the same selection as the inference rule at the smallest kept path value
    tau = float(rule.path_min(torch.where(keep, pre, torch.inf))[keep].min())
    assert torch.equal(keep, rule.mask(pre, None, threshold=torch.full((63,), tau - 1e-6)))


def test_cli_batchtree_from_a_flat_sae_and_its_forest(tmp_path, capsys):
    from mdlsae.cli import main
    from mdlsae.data import make_toy

    toy = make_toy(n_rows=3000, d=16, n_features=48, mean_active=3, seed=2, n_parents=8, children=2, levels=1)
    np.save(tmp_path / "x.npy", toy.x)
    assert main(["train", str(tmp_path / "x.npy"), "--d-sae", "48", "--k", "4", "--epochs", "1", "-o",
                 str(tmp_path / "flat"), "--no-progress"]) == 0
    assert main(["parents", str(tmp_path / "x.npy"), "--sae", str(tmp_path / "flat"), "--step", "0.05",
                 "-o", str(tmp_path / "p.npy"), "--no-progress"]) == 0
    assert main(["train", str(tmp_path / "x.npy"), "--arch", "batchtree", "--init", str(tmp_path / "flat"),
                 "--parents", str(tmp_path / "p.npy"), "--k", "4", "--epochs", "1", "-o", str(tmp_path / "bt"),
                 "--no-progress"]) == 0
    sae = SAE.load(tmp_path / "bt")
    assert sae.cfg.architecture == "tree" and sae.cfg.k is None
    assert np.array_equal(sae.cfg.parents, np.load(tmp_path / "p.npy"))
    capsys.readouterr()
    assert main(["dl", str(tmp_path / "x.npy"), "--sae", str(tmp_path / "bt"), "--step", "0.05", "--json",
                 "--no-progress"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["conditional"] and rep["dl_bits_per_row"] < rep["flat_dl_bits_per_row"]
