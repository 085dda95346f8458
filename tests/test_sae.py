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
    k, thr = sae.selection()
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
    assert torch.allclose(sae.pre_acts(x), x @ sae.W_enc + sae.b_enc)
    sae.save(tmp_path / "s")
    assert SAE.load(tmp_path / "s").cfg.apply_b_dec_to_input is False


@pytest.mark.parametrize("mutate, match", [
    (lambda c, w: w.pop("b_enc"), "lack b_enc"),
    (lambda c, w: w.__setitem__("W_dec", torch.zeros(8, 20)), r"W_dec must have shape \[20, 8\]"),
    (lambda c, w: c.__setitem__("architecture", "gated"), "unsupported SAE architecture 'gated'"),
    (lambda c, w: c.__setitem__("normalize_activations", "layer_norm"), "normalize_activations"),
    (lambda c, w: c.update(architecture="topk", k=99), "k=99"),
    (lambda c, w: w.__setitem__("b_dec", torch.full((8,), float("nan"))), "NaN"),
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
