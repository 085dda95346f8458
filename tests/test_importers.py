"""``mdlsae import`` and the readers' error paths on hand-made directories (the latents of
every reader are checked against the real libraries' output in test_sae_fixtures.py)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.models.formats import import_sae
from mdlsae.models.sae import SAE

D_IN, D_SAE, K = 12, 40, 5


def rand(*shape, seed=0, scale=1.0):
    return scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def write_dl(path, cls, sd, config=True, **trainer):
    path.mkdir(parents=True)
    torch.save(sd, path / "ae.pt")
    if config:
        (path / "config.json").write_text(json.dumps({"trainer": {"dict_class": cls, **trainer}, "buffer": {}}))
    return path


def dl_topk_sd(threshold=-1.0):
    return {"encoder.weight": rand(D_SAE, D_IN, seed=0), "encoder.bias": rand(D_SAE, seed=1, scale=0.3),
            "decoder.weight": rand(D_IN, D_SAE, seed=2), "b_dec": rand(D_IN, seed=7), "k": torch.tensor(K),
            "threshold": torch.tensor(threshold)}


def test_batchtopk_without_a_learned_threshold_is_refused(tmp_path):
    with pytest.raises(MdlsaeError, match="no inference threshold"):
        import_sae(write_dl(tmp_path / "ae", "BatchTopKSAE", dl_topk_sd(-1.0), k=K))


def test_dictionary_learning_class_from_keys(tmp_path):
    gated = {"encoder.weight": rand(D_SAE, D_IN), "decoder.weight": rand(D_IN, D_SAE), "decoder_bias": rand(D_IN),
             "r_mag": rand(D_SAE), "gate_bias": rand(D_SAE), "mag_bias": rand(D_SAE)}
    assert import_sae(write_dl(tmp_path / "g", None, gated, config=False)).cfg.extra["source_class"] == "GatedAutoEncoder"
    odd = dict(gated, extra_tensor=torch.zeros(3))
    with pytest.raises(MdlsaeError, match="match no dictionary_learning class"):
        import_sae(write_dl(tmp_path / "o", None, odd, config=False))
    with pytest.raises(MdlsaeError, match="class must be one of"):
        import_sae(tmp_path / "g", dl_class="Nope")
    with pytest.raises(MdlsaeError, match="'AutoEncoderNew' is not supported"):
        import_sae(write_dl(tmp_path / "n", "AutoEncoderNew", gated))


def write_sparsify(path, cfg, w):
    path.mkdir(parents=True)
    (path / "cfg.json").write_text(json.dumps(cfg))
    save_file(w, str(path / "sae.safetensors"))
    return path


def sparsify_weights():
    return {"encoder.weight": rand(D_SAE, D_IN, seed=1), "encoder.bias": rand(D_SAE, seed=2, scale=0.3),
            "W_dec": rand(D_SAE, D_IN, seed=3), "b_dec": rand(D_IN, seed=4)}


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


def test_import_cli(tmp_path, capsys):
    x = rand(64, D_IN, seed=99, scale=2.0)
    src = write_dl(tmp_path / "ae", "AutoEncoderTopK", dl_topk_sd(), k=K)
    assert main(["import", str(src), "-o", str(tmp_path / "out")]) == 0
    assert "imported dictionary_learning SAE: topk" in capsys.readouterr().out
    back = SAE.load(tmp_path / "out")
    torch.testing.assert_close(back.encode(x), import_sae(src).encode(x))
    bare = write_dl(tmp_path / "bare", None, dl_topk_sd(0.2), config=False)
    assert main(["import", str(bare), "-o", str(tmp_path / "o1")]) == 1
    assert "--class AutoEncoderTopK|BatchTopKSAE" in capsys.readouterr().err
    assert main(["import", str(bare), "--class", "BatchTopKSAE", "-o", str(tmp_path / "o1")]) == 0
    assert SAE.load(tmp_path / "o1").cfg.architecture == "jumprelu"
    assert main(["import", str(src), "--format", "parquet", "-o", str(tmp_path / "o2")]) == 1
    assert "format must be auto or one of" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["import", str(tmp_path / "empty"), "-o", str(tmp_path / "o3")]) == 1
    assert "holding no SAE mdlsae knows" in capsys.readouterr().err
