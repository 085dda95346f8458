"""Downstream losses with the reconstruction spliced back in (measure.downstream), on tiny
transformers with random weights saved locally: the windows rebuilt from the token ids are the
extraction's; with the exact activations the spliced model *is* the clean model (loss 0), an
SAE that is lossless unquantized stays so and its loss grows as the step coarsens; a plain
reference (the whole model, a hook replacing the rows, window by window) agrees with the
cached, partial pass; misaligned rows and encoders without a head are clear errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from conftest import TEXT
from mdlsae import MdlsaeError
from mdlsae.cli import main
from mdlsae.data.extract import extract, hook_module, load_model, windows_of_ids, windows_of_text
from mdlsae.measure.downstream import downstream_loss, pool
from mdlsae.models.sae import SAE, SAEConfig
from mdlsae.selection.precision import Evaluator, SparseLatents

pytest.importorskip("transformers")
SEQ = 16
CASES = [("tiny_gpt2", "ce", "resid", 0), ("tiny_gpt2", "kl", "mlp_out", 1), ("tiny_gpt2", "kl", "resid", 1),
         ("tiny_bert", "embedding", "resid", 1), ("tiny_bert", "embedding", "mlp_out", 0)]


def extracted(model, tmp_path, layer, site):
    out = tmp_path / "acts.npy"
    extract(TEXT, out, layer, model=str(model), site=site, seq_len=SEQ, batch_size=3)
    return torch.from_numpy(np.load(out)), np.load(tmp_path / "acts.tokens.npy"), out


def lossless_sae(d: int) -> SAE:
    """ReLU SAE with W_enc = [I, -I], W_dec = [I; -I]: x = relu(x) - relu(-x) exactly."""
    eye = torch.eye(d)
    return SAE(SAEConfig("relu", d_in=d, d_sae=2 * d),
               {"W_enc": torch.cat([eye, -eye], 1), "b_enc": torch.zeros(2 * d),
                "W_dec": torch.cat([eye, -eye], 0), "b_dec": torch.zeros(d)})


@pytest.mark.parametrize("name", ["tiny_gpt2", "tiny_bert"])
def test_windows_rebuilt_from_ids(name, request, tmp_path):
    path = request.getfixturevalue(name)
    tok, lm = load_model(str(path))
    _, ids, _ = extracted(path, tmp_path, 0, "resid")
    ref = windows_of_text(TEXT, tok, SEQ)
    got = windows_of_ids(ids, tok, SEQ)
    assert [w for w, _ in got] == [w for w, _ in ref]
    assert all((a == b).all() for (_, a), (_, b) in zip(got, ref))


@pytest.mark.parametrize("name,metric,site,layer", CASES)
def test_exact_splice_is_the_clean_model(name, metric, site, layer, request, tmp_path):
    path = request.getfixturevalue(name)
    x, ids, _ = extracted(path, tmp_path, layer, site)
    m = downstream_loss(metric, layer, len(x), tokens=ids, model=str(path), site=site, seq_len=SEQ)
    assert m.n_rows <= len(x) and m.n_rows >= len(x) - SEQ  # the short last window may be left out
    np.testing.assert_allclose(m.site_rows.numpy(), x[:m.n_rows].numpy(), rtol=1e-4, atol=1e-5)
    assert m(m.site_rows, m.site_rows) == 0.0  # the cached partial pass == the clean full forward
    assert abs(m(x, x)) < 1e-5  # extract's own rows: equal up to float rounding
    assert m.reference["zero_ablated"] > 0 if metric != "ce" else m.reference["clean_ce"] > 0


@pytest.mark.parametrize("name,metric,site,layer", CASES)
def test_agrees_with_a_plain_spliced_forward(name, metric, site, layer, request, tmp_path):
    """Reference: the whole model, one window at a time, a hook writing the rows at the site."""
    path = request.getfixturevalue(name)
    x, ids, _ = extracted(path, tmp_path, layer, site)
    m = downstream_loss(metric, layer, len(x), tokens=ids, model=str(path), site=site, seq_len=SEQ)
    x_hat = x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    tok, lm = load_model(str(path), lm_head=metric != "embedding")
    mod = hook_module(lm, layer, site)
    total, count, r = 0.0, 0, 0

    def run(w, rows=None):
        def hook(_, __, out):
            if rows is not None:
                out = out.clone()
                out[0, torch.from_numpy(real)] = rows
            return out
        h = mod.register_forward_hook(hook)
        with torch.no_grad():
            res = lm(input_ids=torch.tensor([w]))
        h.remove()
        return res

    for w, real in windows_of_ids(ids, tok, SEQ):
        n = int(real.sum())
        if r + n > m.n_rows:
            break
        clean, spliced = run(w), run(w, x_hat[r:r + n])
        r += n
        if metric == "embedding":
            att = torch.ones(1, len(w))
            a, b = pool(clean.last_hidden_state, att, "mean"), pool(spliced.last_hidden_state, att, "mean")
            total += float(1 - torch.nn.functional.cosine_similarity(a, b))
            count += 1
            continue
        lp, lq = (torch.log_softmax(o.logits[0].float(), -1) for o in (clean, spliced))
        if metric == "kl":
            total += float((lp.exp() * (lp - lq)).sum())
            count += len(w)
        else:
            nxt = torch.tensor(w[1:])
            total += float(lp[:-1].gather(1, nxt[:, None]).sum() - lq[:-1].gather(1, nxt[:, None]).sum())
            count += len(w) - 1
    assert r == m.n_rows
    np.testing.assert_allclose(m(x, x_hat), total / count, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name,metric,site,layer", [CASES[2], CASES[3]])
def test_lossless_sae_and_loss_grows_with_the_step(name, metric, site, layer, request, tmp_path):
    path = request.getfixturevalue(name)
    x, ids, _ = extracted(path, tmp_path, layer, site)
    m = downstream_loss(metric, layer, len(x), tokens=ids, model=str(path), site=site, seq_len=SEQ)
    ev = Evaluator(SparseLatents.from_sae(x, lossless_sae(x.shape[1])), m)
    assert abs(ev.unquantized_loss()) < 1e-5
    s = float(x.abs().median()) / 64
    losses = [ev.evaluate(np.float32(s * 4 ** i)).loss for i in range(5)]
    assert all(b > a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] > 10 * max(losses[0], 1e-7)


def test_misaligned_rows_and_no_head_are_clear_errors(tiny_gpt2, tiny_bert, tmp_path):
    x, ids, _ = extracted(tiny_gpt2, tmp_path, 0, "resid")
    m = downstream_loss("kl", 1, len(x), tokens=ids, model=str(tiny_gpt2), seq_len=SEQ)  # rows are layer 0's
    with pytest.raises(MdlsaeError, match="not the activations the model computes"):
        m(x, x)
    with pytest.raises(MdlsaeError, match="no trained causal-LM head"):
        downstream_loss("ce", 0, 10, tokens=ids, model=str(tiny_bert), seq_len=SEQ)
    with pytest.raises(MdlsaeError, match="downstream metric must be one of"):
        downstream_loss("bleu", 0, 10, tokens=ids, model=str(tiny_gpt2))


def test_cli_select_and_dl(tiny_gpt2, tmp_path, capsys):
    x, ids, acts = extracted(tiny_gpt2, tmp_path, 1, "resid")
    lossless_sae(x.shape[1]).save(tmp_path / "sae")
    common = ["--metric", "kl", "--model", str(tiny_gpt2), "--layer", "1", "--seq-len", str(SEQ),
              "--max-tokens", "100", "--no-progress"]
    assert main(["select", str(acts), "--sae", str(tmp_path / "sae"), "--tolerance", "1e-3", "--json"]
                + common) == 0
    sel = json.loads(capsys.readouterr().out)
    c = sel["candidates"][0]
    assert sel["metric"] == "kl" and c["meets_tolerance"] and 0 < c["loss"] <= 1e-3
    assert sel["reference"]["zero_ablated"] > 1e-3 and sel["reference"]["tokens"] <= 100
    assert main(["dl", str(acts), "--sae", str(tmp_path / "sae"), "--step", str(c["step"])] + common) == 0
    out = capsys.readouterr().out
    assert "kl (layer 1 resid" in out and "zero_ablated" in out
    assert main(["select", str(acts), "--sae", str(tmp_path / "sae"), "--tolerance", "1e-3", "--tokens",
                 str(tmp_path / "none.npy")] + common) == 1
    assert "needs the token ids" in capsys.readouterr().err
