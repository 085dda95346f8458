"""Shared fixtures: small SAEs on disk, toy activation files, and tiny transformers with random
weights saved locally (a BERT encoder and a GPT-2 causal LM; no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mdlsae
from mdlsae.models.sae import SAE, SAEConfig
from mdlsae.data import make_toy

# Where the mdlsae under test was imported from (python/ in a checkout, site-packages once
# installed): child processes the tests start get it on PYTHONPATH, to run the same build.
PACKAGE_PATH = str(Path(mdlsae.__file__).resolve().parents[1])


@pytest.fixture(scope="session")
def toy():
    return make_toy(n_rows=3000, d=16, n_features=48, mean_active=3, seed=3)


@pytest.fixture()
def toy_npy(tmp_path, toy):
    path = tmp_path / "acts.npy"
    np.save(path, toy.x)
    return path


def make_sae(arch: str, d_in: int = 16, d_sae: int = 48, k: int = 4, seed: int = 0) -> SAE:
    sae = SAE.random(SAEConfig(arch, d_in=d_in, d_sae=d_sae, k=k if arch == "topk" else None), seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        sae.b_enc.copy_(0.1 * torch.randn(d_sae, generator=g))
        sae.b_dec.copy_(0.1 * torch.randn(d_in, generator=g))
        if arch == "jumprelu":
            sae.threshold.copy_(0.2 + 0.3 * torch.rand(d_sae, generator=g))
    return sae


@pytest.fixture()
def sae_dir(tmp_path):
    path = tmp_path / "sae"
    make_sae("topk").save(path)
    return path


TEXT = ("the cat sat on the mat . a dog ran in the park and the cat saw it . "
        "every morning the sun rose over the quiet town , and the birds sang . ") * 6


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 3-layer BERT (d=32) with a word-level vocabulary of TEXT: every word is one token."""
    tf = pytest.importorskip("transformers")
    path = tmp_path_factory.mktemp("tiny_bert")
    words = sorted(set(TEXT.split()))
    (path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tf.BertTokenizerFast(vocab_file=str(path / "vocab.txt")).save_pretrained(path)
    torch.manual_seed(0)
    cfg = tf.BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64)
    tf.BertModel(cfg).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory):
    """A 2-layer GPT-2 causal LM (d=32) with its head; a word-level tokenizer that starts every
    sequence with a BOS token (as Llama's does), so that special positions exist to skip."""
    tf = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    path = tmp_path_factory.mktemp("tiny_gpt2")
    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>"] + sorted(set(TEXT.split())))}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 2)])
    tf.PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", unk_token="<unk>",
                               pad_token="<pad>").save_pretrained(path)
    torch.manual_seed(1)
    cfg = tf.GPT2Config(vocab_size=len(vocab), n_embd=32, n_layer=2, n_head=2, n_positions=64, pad_token_id=0,
                        bos_token_id=2, eos_token_id=2)
    tf.GPT2LMHeadModel(cfg).save_pretrained(path)
    return path
