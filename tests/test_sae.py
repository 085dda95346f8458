"""SAE models: the SAELens on-disk layout, forward pass conventions, clear load errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from conftest import make_sae
from mdlsae import MdlsaeError
from mdlsae.measure import reference
from mdlsae.measure.kernels import select_quantize
from mdlsae.models.sae import SAE


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "relu"])
def test_save_load_round_trip(tmp_path, arch):
    sae = make_sae(arch)
    sae.save(tmp_path / "s")
    back = SAE.load(tmp_path / "s")
    assert back.cfg.architecture == arch and back.cfg.k == sae.cfg.k
    for name, p in sae.named_parameters():
        assert torch.equal(p, getattr(back, name))
    assert back.content_hash() == sae.content_hash()
    x = torch.randn(20, 16)
    assert torch.equal(back.encode(x), sae.encode(x))


@pytest.mark.parametrize("arch", ["topk", "jumprelu", "relu"])
def test_encode_matches_fused_kernel(arch):
    sae = make_sae(arch)
    x = torch.randn(64, 16)
    k, thr, _ = sae.selection()
    with torch.no_grad():
        codes = select_quantize(sae.pre_acts(x), k=k, threshold=thr, step=1e-3)
        z = sae.encode(x)
    assert codes == reference.select_quantize(sae.pre_acts(x).detach(), k=k, threshold=thr, step=1e-3)
    # with a fine step the dequantized codes are the latents up to half a step
    assert torch.allclose(codes.dense(1e-3), torch.relu(z), atol=5e-4 + 1e-6)


def saelens_dir(tmp_path, cfg: dict, weights: dict):
    tmp_path.mkdir(parents=True, exist_ok=True)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    save_file(weights, str(tmp_path / "sae_weights.safetensors"))
    return tmp_path


def test_loads_saelens_standard_and_legacy_topk(tmp_path):
    w = {"W_enc": torch.randn(8, 20), "b_enc": torch.zeros(20), "W_dec": torch.randn(20, 8), "b_dec": torch.zeros(8)}
    std = SAE.load(saelens_dir(tmp_path / "a", {"architecture": "standard", "d_in": 8, "d_sae": 20,
                                                 "dtype": "float32", "hook_name": "blocks.8.hook_resid_pre",
                                                 "normalize_activations": "none"}, w))
    assert std.cfg.architecture == "relu" and std.cfg.extra["hook_name"] == "blocks.8.hook_resid_pre"
    old = SAE.load(saelens_dir(tmp_path / "b", {"d_in": 8, "d_sae": 20, "activation_fn_str": "topk",
                                                 "activation_fn_kwargs": {"k": 3}}, w))
    assert old.cfg.architecture == "topk" and old.cfg.k == 3
    std.save(tmp_path / "c")
    assert json.loads((tmp_path / "c" / "cfg.json").read_text())["hook_name"] == "blocks.8.hook_resid_pre"


def test_apply_b_dec_to_input_respected(tmp_path):
    sae = make_sae("relu")
    sae.cfg.apply_b_dec_to_input = False
    x = torch.randn(3, 16)
    torch.testing.assert_close(sae.pre_acts(x), x @ sae.W_enc + sae.b_enc)
    sae.save(tmp_path / "s")
    assert SAE.load(tmp_path / "s").cfg.apply_b_dec_to_input is False


@pytest.mark.parametrize("arch", ["topk", "jumprelu"])
def test_fused_bias_gives_the_codes_of_the_plain_formula(arch):
    """pre_acts folds b_dec into the bias (one GEMM); the codes equal those of the plain
    (x - b_dec) @ W_enc + b_enc except where float rounding lands on a rounding boundary."""
    sae = make_sae(arch, d_in=64, d_sae=2048, k=32)
    with torch.no_grad():
        sae.b_dec.copy_(torch.randn(64, generator=torch.Generator().manual_seed(5)))
        x = torch.randn(4000, 64, generator=torch.Generator().manual_seed(6))
        plain = (x - sae.b_dec) @ sae.W_enc + sae.b_enc
        k, thr, _ = sae.selection()
        a = select_quantize(sae.pre_acts(x), k=k, threshold=thr, step=0.05)
        b = select_quantize(plain, k=k, threshold=thr, step=0.05)
    assert (sae.pre_acts(x) - plain).abs().max() < 1e-4
    assert a.nnz > 50_000
    differ = int((np.diff(a.row_ptr) != np.diff(b.row_ptr)).sum()) + int(
        np.count_nonzero(a.dense(1.0).numpy() != b.dense(1.0).numpy()))
    assert differ <= a.nnz * 1e-4, differ  # measured: 1 of 128,000 (topk), 14 of 3,371,250 (jumprelu)


@pytest.mark.parametrize("mutate, match", [
    (lambda c, w: w.pop("b_enc"), "lacks b_enc"),
    (lambda c, w: w.__setitem__("W_dec", torch.zeros(8, 20)), r"W_dec must have shape \[20, 8\]"),
    (lambda c, w: c.__setitem__("architecture", "matching_pursuit"), "unsupported SAELens architecture 'matching_pursuit'"),
    (lambda c, w: c.__setitem__("normalize_activations", "covariance_whitening"), "normalize_activations"),
    (lambda c, w: c.update(architecture="topk", k=99), "k=99"),
    (lambda c, w: w.__setitem__("b_dec", torch.full((8,), float("nan"))), "NaN"),
    (lambda c, w: w["W_enc"].__setitem__((3, 7), float("inf")), "W_enc contains NaN or Inf"),  # one entry
    (lambda c, w: w["W_dec"][0].__setitem__(slice(0, 2), torch.tensor([float("inf"), -float("inf")])),
     "W_dec contains NaN or Inf"),  # +inf and -inf: their sum is NaN, still caught
])
def test_bad_sae_directories(tmp_path, mutate, match):
    cfg = {"architecture": "relu", "d_in": 8, "d_sae": 20}
    w = {"W_enc": torch.randn(8, 20), "b_enc": torch.zeros(20), "W_dec": torch.randn(20, 8), "b_dec": torch.zeros(8)}
    mutate(cfg, w)
    with pytest.raises(MdlsaeError, match=match):
        SAE.load(saelens_dir(tmp_path, cfg, w))


def test_missing_files(tmp_path):
    with pytest.raises(MdlsaeError, match="does not exist"):
        SAE.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(MdlsaeError, match="cfg.json"):
        SAE.load(tmp_path / "empty")


def test_save_is_atomic(tmp_path, monkeypatch):
    sae = make_sae("relu")
    sae.save(tmp_path / "s")
    before = (tmp_path / "s" / "sae_weights.safetensors").read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr("mdlsae.models.sae.save_file", boom)
    with pytest.raises(OSError):
        make_sae("relu", seed=5).save(tmp_path / "s")
    assert (tmp_path / "s" / "sae_weights.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s"]
    np.testing.assert_array_equal(SAE.load(tmp_path / "s").W_dec.detach().numpy(), sae.W_dec.detach().numpy())


def test_atomic_writes_get_usual_permissions(tmp_path):
    import os
    import stat

    from mdlsae.fileio import _umask, atomic_file

    with atomic_file(tmp_path / "f.bin") as f:
        f.write(b"x")
    make_sae("relu").save(tmp_path / "d")
    assert stat.S_IMODE(os.stat(tmp_path / "f.bin").st_mode) == 0o666 & ~_umask()
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o777 & ~_umask()


# ------------------------------------------------ SAELens configs of earlier versions (issue 11)
def write_saelens(path, cfg, weights):
    path.mkdir(parents=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "sae_weights.safetensors"))
    return path


def saelens_weights(d_in=16, d_sae=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    w_dec = torch.randn(d_sae, d_in, generator=g)
    w_dec *= (0.5 + 1.5 * torch.rand(d_sae, 1, generator=g)) / w_dec.norm(dim=1, keepdim=True)  # non-unit rows
    return {"W_enc": torch.randn(d_in, d_sae, generator=g), "b_enc": 0.3 * torch.randn(d_sae, generator=g),
            "W_dec": w_dec, "b_dec": 0.2 * torch.randn(d_in, generator=g)}


@pytest.mark.parametrize("key", ["activation_fn_str", "activation_fn"])
def test_pre6_saelens_topk_reads_as_topk(tmp_path, key):
    # SAELens < 6 stored TopK as "standard" with the activation function naming topk
    w = saelens_weights()
    cfg = {"architecture": "standard", "d_in": 16, "d_sae": 32, key: "topk", "activation_fn_kwargs": {"k": 4},
           "apply_b_dec_to_input": True, "normalize_activations": "none"}
    sae = SAE.load(write_saelens(tmp_path / "s", cfg, w))
    assert sae.cfg.architecture == "topk" and sae.cfg.k == 4
    x = torch.randn(50, 16)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    vals, idx = pre.topk(4, dim=1)  # SAELens's TopK: topk of pre, then ReLU
    expect = torch.zeros_like(pre).scatter(1, idx, torch.relu(vals))
    with torch.no_grad():
        got = sae.encode(x)
    assert torch.allclose(got, expect, atol=1e-5)
    assert int((got > 0).sum(1).max()) <= 4
    sae.save(tmp_path / "again")  # and it saves as TopK
    assert SAE.load(tmp_path / "again").cfg.architecture == "topk"


def test_jumprelu_negative_threshold_is_relu_before_threshold(tmp_path):
    w = saelens_weights()
    w["threshold"] = torch.linspace(-0.5, 0.5, 32)
    sae = SAE.load(write_saelens(tmp_path / "s", {"architecture": "jumprelu", "d_in": 16, "d_sae": 32}, w))
    x = torch.randn(80, 16)
    pre = (x - w["b_dec"]) @ w["W_enc"] + w["b_enc"]
    with torch.no_grad():
        z = sae.encode(x)
    torch.testing.assert_close(z, torch.relu(pre) * (pre > w["threshold"]))  # SAELens JumpReLU
    assert bool((z >= 0).all())


@pytest.mark.parametrize("flag", ["signed", "transcode"])
def test_config_flags_that_change_latents_are_refused(tmp_path, flag):
    cfg = {"architecture": "topk", "k": 4, "d_in": 16, "d_sae": 32, flag: True}
    path = write_saelens(tmp_path / "s", cfg, saelens_weights())
    with pytest.raises(MdlsaeError, match=flag):
        SAE.load(path)
    cfg[flag] = False  # the default is read as usual
    (path / "cfg.json").write_text(json.dumps(cfg))
    assert SAE.load(path).cfg.k == 4


def test_unknown_weight_tensor_is_refused(tmp_path):
    # e.g. an older JumpReLU training checkpoint's log_threshold: never silently ignored
    w = dict(saelens_weights(), log_threshold=torch.zeros(32))
    cfg = {"architecture": "standard", "d_in": 16, "d_sae": 32}
    with pytest.raises(MdlsaeError, match="log_threshold.*refusing"):
        SAE.load(write_saelens(tmp_path / "s", cfg, w))


def test_other_activation_function_is_refused(tmp_path):
    cfg = {"architecture": "standard", "d_in": 16, "d_sae": 32, "activation_fn_str": "tanh-relu"}
    with pytest.raises(MdlsaeError, match="tanh-relu"):
        SAE.load(write_saelens(tmp_path / "s", cfg, saelens_weights()))


def test_relu_saves_as_saelens_standard_and_bool_normalization_reads(tmp_path):
    sae = make_sae("relu")
    sae.save(tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert cfg["architecture"] == "standard"  # SAELens has no "relu" architecture
    cfg["normalize_activations"] = False  # SAELens 4 wrote a bool
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    back = SAE.load(tmp_path / "s")
    assert back.cfg.architecture == "relu" and back.content_hash() == sae.content_hash()


def test_gemma_scope_params_npz(tmp_path):
    # Gemma Scope's documented encoder (its release tutorial): no b_dec subtracted, ReLU and threshold
    w = {k: v.numpy() for k, v in saelens_weights().items()}
    w["threshold"] = np.linspace(-0.2, 0.8, 32, dtype=np.float32)
    (tmp_path / "layer_3" / "width_32").mkdir(parents=True)
    np.savez(tmp_path / "layer_3" / "width_32" / "params.npz", **w)
    x = torch.randn(40, 16)
    pre = x @ torch.from_numpy(w["W_enc"]) + torch.from_numpy(w["b_enc"])
    expect = torch.relu(pre) * (pre > torch.from_numpy(w["threshold"]))
    for path in (tmp_path / "layer_3" / "width_32", tmp_path / "layer_3" / "width_32" / "params.npz"):
        sae = SAE.load(path)
        assert sae.cfg.architecture == "jumprelu" and not sae.cfg.apply_b_dec_to_input
        with torch.no_grad():
            assert torch.allclose(sae.encode(x), expect, atol=1e-5)
    del w["threshold"]
    np.savez(tmp_path / "bad.npz", **w)
    (tmp_path / "b").mkdir()
    (tmp_path / "bad.npz").rename(tmp_path / "b" / "params.npz")
    with pytest.raises(MdlsaeError, match="lacks threshold"):
        SAE.load(tmp_path / "b")
