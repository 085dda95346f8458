"""Importers: each converted SAE gives the latents (and reconstructions) of its source
library's own forward pass, written out here from that library's formulas on small synthetic
state dicts; bad sources give clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.models.importers import import_sae
from mdlsae.models.sae import SAE

D_IN, D_SAE, K = 12, 40, 5


def rand(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def x():
    return rand(64, D_IN, seed=99, scale=2.0)


def topk_relu(pre, k):
    """sparsify / dictionary_learning: TopK of ReLU, scattered back to a dense vector."""
    vals, idx = torch.relu(pre).topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals)


def write_dl(path, cls, sd, **trainer):
    path.mkdir()
    torch.save(sd, path / "ae.pt")
    (path / "config.json").write_text(json.dumps({"trainer": {"dict_class": cls, **trainer}, "buffer": {}}))
    return path


def dl_linear_sd(seed=0):
    return {"encoder.weight": rand(D_SAE, D_IN, seed=seed), "encoder.bias": rand(D_SAE, seed=seed + 1, scale=0.3),
            "decoder.weight": rand(D_IN, D_SAE, seed=seed + 2)}


def check(sae: SAE, x, z_ref, x_hat_ref):
    with torch.no_grad():
        z = sae.encode(x)
        torch.testing.assert_close(z, z_ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode(z), x_hat_ref, atol=1e-4, rtol=1e-5)
    assert (z > 0).any()


def test_dictionary_learning_autoencoder(tmp_path, x):
    sd = dict(dl_linear_sd(), bias=rand(D_IN, seed=7))
    sae = import_sae(write_dl(tmp_path / "ae", "AutoEncoder", sd))
    f = torch.relu((x - sd["bias"]) @ sd["encoder.weight"].T + sd["encoder.bias"])  # encode
    assert sae.cfg.architecture == "relu"
    check(sae, x, f, f @ sd["decoder.weight"].T + sd["bias"])


def test_dictionary_learning_topk(tmp_path, x):
    sd = dict(dl_linear_sd(), b_dec=rand(D_IN, seed=7), k=torch.tensor(K), threshold=torch.tensor(-1.0))
    sae = import_sae(write_dl(tmp_path / "ae", "AutoEncoderTopK", sd, k=K))
    f = topk_relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"], K)
    assert sae.cfg.architecture == "topk" and sae.cfg.k == K
    check(sae, x, f, f @ sd["decoder.weight"].T + sd["b_dec"])


def test_dictionary_learning_batchtopk_uses_its_threshold(tmp_path, x):
    sd = dict(dl_linear_sd(), b_dec=rand(D_IN, seed=7), k=torch.tensor(K), threshold=torch.tensor(1.3))
    sae = import_sae(write_dl(tmp_path / "ae", "BatchTopKSAE", sd, k=K))
    post = torch.relu((x - sd["b_dec"]) @ sd["encoder.weight"].T + sd["encoder.bias"])
    f = post * (post > sd["threshold"])  # encode(use_threshold=True)
    assert sae.cfg.architecture == "jumprelu"
    check(sae, x, f, f @ sd["decoder.weight"].T + sd["b_dec"])
    sd["threshold"] = torch.tensor(-1.0)
    with pytest.raises(MdlsaeError, match="no inference threshold"):
        import_sae(write_dl(tmp_path / "ae2", "BatchTopKSAE", sd, k=K))


@pytest.mark.parametrize("apply_b_dec", [False, True])
def test_dictionary_learning_jumprelu(tmp_path, x, apply_b_dec):
    sd = {"W_enc": rand(D_IN, D_SAE, seed=1), "b_enc": rand(D_SAE, seed=2, scale=0.3),
          "W_dec": rand(D_SAE, D_IN, seed=3), "b_dec": rand(D_IN, seed=4),
          "threshold": rand(D_SAE, seed=5)}  # some thresholds negative: relu still applies
    sae = import_sae(write_dl(tmp_path / "ae", "JumpReluAutoEncoder", sd, apply_b_dec_to_input=apply_b_dec))
    xin = x - sd["b_dec"] if apply_b_dec else x
    pre = xin @ sd["W_enc"] + sd["b_enc"]
    f = torch.relu(pre * (pre > sd["threshold"]))
    check(sae, x, f, f @ sd["W_dec"] + sd["b_dec"])


def write_sparsify(path, cfg, w):
    path.mkdir(parents=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(path / "sae.safetensors"))
    return path


def sparsify_weights():
    return {"encoder.weight": rand(D_SAE, D_IN, seed=1), "encoder.bias": rand(D_SAE, seed=2, scale=0.3),
            "W_dec": rand(D_SAE, D_IN, seed=3), "b_dec": rand(D_IN, seed=4)}


def test_sparsify(tmp_path, x):
    w = sparsify_weights()
    cfg = {"expansion_factor": 32, "normalize_decoder": True, "num_latents": D_SAE, "k": K,
           "multi_topk": False, "skip_connection": False, "d_in": D_IN}
    sae = import_sae(write_sparsify(tmp_path / "layers.3", cfg, w))
    f = topk_relu((x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"], K)
    vals, idx = f.topk(K, dim=-1)
    x_hat = (vals[..., None] * w["W_dec"][idx]).sum(-2) + w["b_dec"]  # sparsify's sparse decode
    check(sae, x, f, x_hat)
    assert import_sae(tmp_path / "layers.3", "sparsify").content_hash() == sae.content_hash()


def test_sparsify_errors(tmp_path):
    w = sparsify_weights()
    write_sparsify(tmp_path / "run" / "layers.0", {"k": K, "d_in": D_IN}, w)
    write_sparsify(tmp_path / "run" / "layers.1", {"k": K, "d_in": D_IN, "transcode": True}, w)
    with pytest.raises(MdlsaeError, match="several hookpoints.*layers.0"):
        import_sae(tmp_path / "run")
    with pytest.raises(MdlsaeError, match="transcoder"):
        import_sae(tmp_path / "run" / "layers.1")
    with pytest.raises(MdlsaeError, match="looks like a sparsify SAE.*mdlsae import"):
        SAE.load(tmp_path / "run" / "layers.0")
    write_sparsify(tmp_path / "signed", {"k": K, "d_in": D_IN, "signed": True}, w)
    with pytest.raises(MdlsaeError, match="signed"):
        import_sae(tmp_path / "signed")
    bad = dict(w, W_dec=rand(D_SAE + 1, D_IN))
    write_sparsify(tmp_path / "bad", {"k": K, "d_in": D_IN}, bad)
    with pytest.raises(MdlsaeError, match="W_dec must have shape"):
        import_sae(tmp_path / "bad")


def test_saelens_jumprelu_native(tmp_path, x):
    w = {"W_enc": rand(D_IN, D_SAE, seed=1), "b_enc": rand(D_SAE, seed=2, scale=0.3), "W_dec": rand(D_SAE, D_IN, seed=3),
         "b_dec": rand(D_IN, seed=4), "threshold": rand(D_SAE, seed=5).abs()}
    (tmp_path / "s").mkdir()
    save_file(w, str(tmp_path / "s" / "sae_weights.safetensors"))
    (tmp_path / "s" / "cfg.json").write_text(json.dumps({
        "architecture": "jumprelu", "d_in": D_IN, "d_sae": D_SAE, "apply_b_dec_to_input": False,
        "hook_name": "blocks.3.hook_resid_post", "normalize_activations": "none"}))
    sae = import_sae(tmp_path / "s")
    pre = x @ w["W_enc"] + w["b_enc"]  # SAELens JumpReLU without b_dec on the input
    f = pre * (pre > w["threshold"])
    check(sae, x, f, f @ w["W_dec"] + w["b_dec"])
    assert sae.cfg.extra["hook_name"] == "blocks.3.hook_resid_post"


def test_import_cli(tmp_path, capsys, x):
    sd = dict(dl_linear_sd(), b_dec=rand(D_IN, seed=7), k=torch.tensor(K))
    src = write_dl(tmp_path / "ae", "AutoEncoderTopK", sd, k=K)
    assert main(["import", str(src), "-o", str(tmp_path / "out")]) == 0
    assert "imported dictionary_learning SAE: topk" in capsys.readouterr().out
    back = SAE.load(tmp_path / "out")
    torch.testing.assert_close(back.encode(x), import_sae(src).encode(x))
    gated = write_dl(tmp_path / "g", "GatedAutoEncoder", dl_linear_sd())
    assert main(["import", str(gated), "-o", str(tmp_path / "o2")]) == 1
    assert "GatedAutoEncoder' is not supported" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["import", str(tmp_path / "empty"), "-o", str(tmp_path / "o3")]) == 1
    assert "no ae.pt" in capsys.readouterr().err
