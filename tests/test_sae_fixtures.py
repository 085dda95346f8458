"""Every committed SAE fixture (tests/fixtures/sae_formats, written by the real libraries'
own save functions: sae-lens 4.3.5 / 5.11.0 / 6.54.12, dictionary-learning 0.1.0,
eai-sparsify 1.3.3, and SAELens's loaders for the Gemma/Llama/Qwen Scope releases) either
loads with the latents and reconstruction that library's own encode/decode gave, or is refused
with a message saying what it is. Nothing loads with different latents."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.models.formats import import_sae
from mdlsae.models.sae import SAE

ROOT = Path(__file__).parent / "fixtures" / "sae_formats"
LLAMA = "scope_llama_scope/hf/fnlp/Llama3_1-8B-Base-LXR-8x/Llama3_1-8B-Base-L3R-8x"
GEMMA = "scope_gemma_scope/hf/google/gemma-scope-2b-pt-res/layer_3/width_16k/average_l0_10"
GEMMA2 = "scope_gemma_scope_2/hf/google/gemma-scope-2-4b-pt/resid_post/layer_17_width_16k_l0_medium"
GEMMA2_TC = "scope_gemma_scope_2_transcoder/hf/google/gemma-scope-2-4b-pt/transcoder_all/layer_5_width_16k_l0_medium_affine"
QWEN = "scope_qwen_scope/hf/Qwen/SAE-Res-Qwen3-1.7B-Base-W32K-L0_4"

SAELENS = [f"saelens{v}_{n}" for v in (4, 5) for n in (
    "standard", "topk", "gated", "jumprelu", "no_b_dec_input", "finetuning_scaling", "finetuning_scaling_renamed",
    "expected_average", "layer_norm", "constant_norm_rescale")] + [
    "saelens5_topk_arch", "saelens5_jumprelu_no_b_dec_input"] + [f"saelens6_{n}" for n in (
        "standard", "standard_no_b_dec_input", "standard_layer_norm", "standard_constant_norm_rescale",
        "standard_expected_average", "topk", "topk_rescale", "jumprelu", "jumprelu_no_b_dec_input", "gated",
        "topk_rescale_train_ckpt", "topk_rescale_train_final", "batchtopk_train_final", "matryoshka_train_final",
        "jumprelu_train_ckpt", "jumprelu_train_final", "standard_train_ckpt")]
DL = [f"dl_{n}_trainer" for n in ("standard", "topk", "batchtopk", "matryoshka", "jumprelu", "gated")]

# (fixture, SAE path inside it, import options, where the expected latents are: fixture/key)
LOADS = (
    [(f, "sae", {}, f"{f}/latents") for f in SAELENS]
    + [(f, "trainer_0", {}, f"{f}/latents") for f in DL + ["dl_topk_trainer_normalized"]]
    + [(f, "trainer_0/checkpoints/ae_5.pt", {}, f"{f}/latents_checkpoint") for f in DL]
    + [(f"dl_{n}_bare", "ae.pt", {}, f"dl_{n}_bare/latents") for n in ("standard", "matryoshka", "jumprelu", "gated")]
    + [("dl_topk_bare", "ae.pt", {"dl_class": "AutoEncoderTopK"}, "dl_topk_bare/latents"),
       ("dl_batchtopk_bare", "ae.pt", {"dl_class": "BatchTopKSAE"}, "dl_batchtopk_bare/latents"),
       # a batchtopk / matryoshka TRAINING checkpoint: its inference model is what SAELens's
       # save_inference_model writes at the end of the same run
       ("saelens6_batchtopk_train_ckpt", "sae", {}, "saelens6_batchtopk_train_final/latents"),
       ("saelens6_matryoshka_train_ckpt", "sae", {}, "saelens6_matryoshka_train_final/latents"),
       ("sparsify_topk", "sae", {}, "sparsify_topk/latents"),
       ("sparsify_topk_nonunit_decoder", "sae", {}, "sparsify_topk_nonunit_decoder/latents"),
       ("scope_gemma_scope", GEMMA.split("/", 1)[1], {}, "scope_gemma_scope/latents"),
       ("scope_gemma_scope", GEMMA.split("/", 1)[1] + "/params.npz", {}, "scope_gemma_scope/latents"),
       ("scope_gemma_scope_2", GEMMA2.split("/", 1)[1], {}, "scope_gemma_scope_2/latents"),
       ("scope_llama_scope", LLAMA.split("/", 1)[1], {}, "scope_llama_scope/latents"),
       ("scope_qwen_scope", QWEN.split("/", 1)[1], {}, "scope_qwen_scope/latents")]
)

REFUSED = [
    ("saelens6_abstopk", "sae", "abstopk.*sign"),
    ("saelens6_transcoder", "sae", "transcoder.*predicts another"),
    ("saelens6_skip_transcoder", "sae", "skip_transcoder.*predicts another"),
    ("saelens6_jumprelu_transcoder", "sae", "jumprelu_transcoder.*predicts another"),
    ("scope_gemma_scope_2_transcoder", GEMMA2_TC.split("/", 1)[1], "Gemma Scope 2 transcoder"),
    ("sparsify_groupmax", "sae", "groupmax"),
    ("sparsify_transcoder", "sae", "transcoder"),
    ("sparsify_skip_transcoder", "sae", "transcoder"),
    ("dl_topk_bare", "ae.pt", "AutoEncoderTopK.*BatchTopKSAE.*--class"),
]


def expected(ref: str) -> tuple[dict, torch.Tensor, str]:
    fixture, key = ref.split("/")
    e = load_file(str(ROOT / fixture / "expected.safetensors"))
    return e, e[key], key.replace("latents", "recon")


@pytest.mark.parametrize("fixture,inner,opts,ref", LOADS, ids=[f"{c[0]}:{c[1].rsplit('/', 1)[-1]}" for c in LOADS])
def test_loads_with_the_library_latents(fixture, inner, opts, ref):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # expected_average_only_in warns; tested below
        sae = import_sae(ROOT / fixture / inner, **opts)
    e, latents, recon_key = expected(ref)
    with torch.no_grad():
        z = sae.encode(e["x"])
        torch.testing.assert_close(z, latents, atol=1e-5, rtol=1e-5)
        assert (z > 0).sum() >= 16  # not a trivially empty match
        if recon_key in e:
            torch.testing.assert_close(sae.decode(z, e["x"]), e[recon_key], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture,inner,match", REFUSED, ids=[c[0] for c in REFUSED])
def test_refused_with_what_it_is(fixture, inner, match):
    with pytest.raises(MdlsaeError, match=match):
        import_sae(ROOT / fixture / inner)


@pytest.mark.parametrize("fixture", [f for f in SAELENS if (ROOT / f / "expected_saelens6.safetensors").exists()])
def test_pre6_directories_read_as_saelens6_reads_them(fixture):
    e = load_file(str(ROOT / fixture / "expected.safetensors"))
    e6 = load_file(str(ROOT / fixture / "expected_saelens6.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sae = SAE.load(ROOT / fixture / "sae")
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(e["x"]), e6["latents"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("fixture", ["saelens4_expected_average", "saelens6_standard_expected_average"])
def test_expected_average_warns_or_folds_its_factor(tmp_path, fixture):
    with pytest.warns(UserWarning, match="already be scaled"):
        SAE.load(ROOT / fixture / "sae")
    shutil.copytree(ROOT / fixture / "sae", tmp_path / "s")
    cfg = json.loads((tmp_path / "s" / "cfg.json").read_text())
    cfg["norm_scaling_factor"] = json.loads((ROOT / fixture / "meta.json").read_text())["norm_scaling_factor"]
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(cfg))
    e = load_file(str(ROOT / fixture / "expected.safetensors"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sae = SAE.load(tmp_path / "s")  # the factor is folded: raw activations go in
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(e["x"]), e["latents_folded"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.encode(e["x"]), e["latents_scaled_input"], atol=1e-5, rtol=1e-5)


ROUND_TRIPS = sorted(p.name for p in ROOT.glob("roundtrip_*"))


@pytest.mark.parametrize("fixture", ROUND_TRIPS)
def test_written_directories_load_in_saelens6(tmp_path, fixture):
    """The committed directory was written by mdlsae and read by SAELens 6.54.12's
    SAE.load_from_disk (latents in expected.safetensors); the writer still writes it."""
    source = json.loads((ROOT / fixture / "meta.json").read_text())["written_by"].split()[2]
    import_sae(ROOT / source).save(tmp_path / "sae")
    committed = ROOT / fixture / "sae"
    assert json.loads((tmp_path / "sae" / "cfg.json").read_text()) == json.loads((committed / "cfg.json").read_text())
    ours, golden = load_file(str(tmp_path / "sae" / "sae_weights.safetensors")), load_file(str(committed / "sae_weights.safetensors"))
    assert ours.keys() == golden.keys() and all(torch.equal(ours[k], golden[k]) for k in ours)
    e = load_file(str(ROOT / fixture / "expected.safetensors"))
    sae = SAE.load(committed)
    with torch.no_grad():
        torch.testing.assert_close(sae.encode(e["x"]), e["latents"], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(sae.decode(sae.encode(e["x"]), e["x"]), e["recon"], atol=1e-5, rtol=1e-5)


def test_another_librarys_folder_points_to_import(tmp_path, capsys):
    np_rows = tmp_path / "x.npy"
    import numpy as np

    np.save(np_rows, load_file(str(ROOT / "dl_topk_trainer" / "expected.safetensors"))["x"].numpy())
    assert main(["dl", str(np_rows), "--sae", str(ROOT / "dl_topk_trainer" / "trainer_0"), "--step", "0.1"]) == 1
    assert "looks like a dictionary_learning SAE; convert it first: mdlsae import" in capsys.readouterr().err
    assert main(["import", str(ROOT / "dl_topk_trainer" / "trainer_0"), "-o", str(tmp_path / "o")]) == 0
    assert main(["dl", str(np_rows), "--sae", str(tmp_path / "o"), "--step", "0.1", "--json"]) == 0


def test_codec_refuses_row_normalising_saes(tmp_path, capsys):
    import numpy as np

    np.save(tmp_path / "x.npy", load_file(str(ROOT / "saelens6_standard_layer_norm" / "expected.safetensors"))["x"].numpy())
    assert main(["dl", str(tmp_path / "x.npy"), "--sae", str(ROOT / "saelens6_standard_layer_norm" / "sae"), "--step", "0.1"]) == 1
    assert "normalises each input row (normalize_activations='layer_norm')" in capsys.readouterr().err
