"""The trainer: unit-norm decoder rows, determinism, resume identical to an uninterrupted run,
scale folding, the data stream's coverage, feature recovery on toy data, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdlsae import MdlsaeError, SAEConfig
from mdlsae.models.train import checkpoint, stream
from mdlsae.models.train import trainer as T
from mdlsae.data.acts import Activations
from mdlsae.cli import main
from mdlsae.data import make_toy, mmcs
from mdlsae.models.sae import SAE
from mdlsae.models.train import BatchStream, TrainConfig, Trainer, evaluate, train, train_sae

ARCHS = ["topk", "batchtopk", "matryoshka", "jumprelu", "relu"]


@pytest.fixture(scope="module")
def small():
    return make_toy(n_rows=4000, d=16, n_features=48, mean_active=3, seed=3)


def cfg(arch="topk", **kw):
    kw.setdefault("epochs", 2)
    if arch in ("tree", "batchtree"):
        kw.setdefault("branching", [3])  # 16 roots with 3 children each
    return TrainConfig(architecture=arch, d_sae=64, k=4, batch_size=128, **kw)


def weights(sae):
    return {n: p.detach().clone() for n, p in sae.named_parameters()}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_architecture_trains(small, arch):
    res = train(small.x, cfg(arch, epochs=3))
    sae = res.sae
    assert sae.cfg.architecture == {"batchtopk": "jumprelu", "matryoshka": "jumprelu"}.get(arch, arch)
    np.testing.assert_allclose(sae.W_dec.detach().norm(dim=1).numpy(), 1, atol=1e-5)
    assert res.stats["fvu"] < 0.7 and 0 <= res.stats["dead_frac"] < 1
    assert res.stats["steps"] == 3 * (4000 // 128)
    if arch in ("batchtopk", "matryoshka"):  # one calibrated threshold: mean L0 close to k
        assert torch.all(sae.threshold == sae.threshold[0]) and sae.threshold[0].item() > 0
        assert res.stats["l0"] == pytest.approx(4, rel=0.25)
    if arch == "topk":
        assert res.stats["l0"] <= 4


def test_matryoshka_prefixes_reconstruct_on_their_own(small):
    # the nested prefixes are trained to reconstruct: the first 16 latents alone explain far more
    # of the data than the first 16 of a plain BatchTopK SAE
    from mdlsae.models.train.objectives.matryoshka import default_groups

    assert default_groups(64) == [4, 4, 8, 16, 32] and sum(default_groups(1000)) == 1000
    x = torch.from_numpy(small.x)

    @torch.no_grad()
    def prefix_fvu(sae, m):
        z = sae.encode(x)
        z[:, m:] = 0
        return float(((sae.decode(z) - x) ** 2).sum() / ((x - x.mean(0)) ** 2).sum())
    mat = train(small.x, cfg("matryoshka", epochs=3, groups=[16, 16, 32])).sae
    flat = train(small.x, cfg("batchtopk", epochs=3)).sae
    assert prefix_fvu(mat, 16) < 0.8 * prefix_fvu(flat, 16)
    with pytest.raises(MdlsaeError, match="sum to d_sae=64"):
        train(small.x, cfg("matryoshka", groups=[16, 16]))


def test_deterministic_given_the_seed(small):
    a, b = train_sae(small.x, cfg(seed=7)), train_sae(small.x, cfg(seed=7))
    for name, p in weights(a).items():
        assert torch.equal(p, getattr(b, name)), name
    c = train_sae(small.x, cfg(seed=8))
    assert not torch.equal(a.W_dec, c.W_dec)


@pytest.mark.parametrize("arch", ARCHS + ["tree", "batchtree"])
def test_resume_equals_uninterrupted(small, tmp_path, monkeypatch, arch):
    full = train(small.x, cfg(arch, epochs=3)).sae
    ckpt = tmp_path / "run.ckpt"
    step = T.Trainer.train_step

    def interrupted(self, x):  # Ctrl-C in the middle of the second epoch
        if self.step == 45:
            raise KeyboardInterrupt
        return step(self, x)

    monkeypatch.setattr(T.Trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(small.x, cfg(arch, epochs=3), checkpoint=ckpt)
    monkeypatch.setattr(T.Trainer, "train_step", step)
    assert torch.load(ckpt, weights_only=True)["step"] == 45
    resumed = train(small.x, cfg(arch, epochs=3), checkpoint=ckpt, resume=True).sae
    for name, p in weights(full).items():
        assert torch.equal(p, getattr(resumed, name)), name


def test_resume_refuses_a_foreign_checkpoint(small, tmp_path):
    ckpt = tmp_path / "c.ckpt"
    checkpoint.save(Trainer(small.x, cfg()), ckpt)
    with pytest.raises(MdlsaeError, match="different run.*cfg"):
        train(small.x, cfg(seed=1), checkpoint=ckpt, resume=True)
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(MdlsaeError, match="not a readable"):
        train(small.x, cfg(), checkpoint=tmp_path / "junk.ckpt", resume=True)


def test_scale_is_folded_back(small):
    """Training on c·x gives the same dictionary, with biases and latents scaled by c."""
    a = train_sae(small.x, cfg("jumprelu"))
    b = train_sae(small.x * 10, cfg("jumprelu"))
    torch.testing.assert_close(b.W_dec, a.W_dec, atol=2e-3, rtol=0)
    torch.testing.assert_close(b.b_dec, 10 * a.b_dec, atol=2e-2, rtol=1e-3)
    torch.testing.assert_close(b.threshold, 10 * a.threshold, atol=1e-2, rtol=1e-3)
    x = torch.from_numpy(small.x[:500])
    assert evaluate(b, small.x * 10)["fvu"] == pytest.approx(evaluate(a, small.x)["fvu"], rel=0.02)
    with torch.no_grad():
        assert float((b.encode(10 * x) - 10 * a.encode(x)).abs().mean()) < 0.05


def test_batch_stream_covers_each_row_once_per_epoch(monkeypatch):
    monkeypatch.setattr(stream, "BLOCK_ROWS", 100)
    monkeypatch.setattr(stream, "POOL_BYTES", 4 * 3 * 100 * 3)  # 3 blocks per pool: batches cross pools
    x = np.arange(1050 * 3, dtype=np.float32).reshape(1050, 3)
    s = BatchStream(Activations(x), 64, seed=1, device=torch.device("cpu"))
    assert s.steps_per_epoch == 16
    epoch = torch.cat(list(s.batches(0)))[:, 0].long() // 3
    assert len(epoch) == 16 * 64 and len(set(epoch.tolist())) == len(epoch)
    later = torch.cat(list(s.batches(0, start=5)))[:, 0].long() // 3
    assert torch.equal(later, epoch[5 * 64:])  # resuming mid-epoch gives the same batches
    assert not torch.equal(torch.cat(list(s.batches(1)))[:, 0], epoch.float() * 3)


def test_fixed_decoder_is_kept(small):
    init = SAE.random(SAEConfig("topk", d_in=16, d_sae=48, k=4), seed=1)
    out = train_sae(small.x, TrainConfig(d_sae=48, k=4, epochs=1, train_decoder=False), init=init)
    assert torch.equal(out.W_dec, init.W_dec)
    assert not torch.equal(out.W_enc, init.W_enc)


@pytest.mark.slow
def test_topk_recovers_toy_features():
    toy = make_toy(n_rows=16_000, d=32, n_features=64, mean_active=3, seed=0)
    sae = train_sae(toy.x, TrainConfig(d_sae=128, k=4, epochs=12))
    assert mmcs(sae, toy.features) > 0.95


@pytest.mark.parametrize("kw, match", [
    (dict(architecture="gated"), "architecture"),
    (dict(k=0), "k must be"),
    (dict(b_dec_init="mode"), "b_dec_init"),
    (dict(epochs=0), "epochs"),
])
def test_bad_configs(kw, match):
    with pytest.raises(MdlsaeError, match=match):
        TrainConfig(**kw)


def test_train_cli(tmp_path, capsys, small):
    np.save(tmp_path / "a.npy", small.x)
    out = tmp_path / "sae"
    assert main(["train", str(tmp_path / "a.npy"), "--arch", "batchtopk", "--d-sae", "32", "--k", "3",
                 "--epochs", "1", "-o", str(out), "--json", "--no-progress"]) == 0
    stats = json.loads(capsys.readouterr().out)
    sae = SAE.load(out)
    assert sae.cfg.architecture == "jumprelu" and sae.d_sae == 32
    assert sae.cfg.extra["mdlsae_training"]["fvu"] == pytest.approx(stats["fvu"])
    assert not (tmp_path / "sae.ckpt").exists()
    assert main(["train", str(tmp_path / "a.npy"), "--d-sae", "32", "-o", str(out), "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing.npy"), "--d-sae", "32", "-o", str(out)]) == 1
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ARCHS)
def test_cuda_training_matches_cpu(small, arch):
    cpu = train(small.x, cfg(arch, epochs=3, device="cpu"))
    gpu = train(small.x, cfg(arch, epochs=3, device="cuda"))
    assert gpu.sae.W_dec.device.type == "cpu"  # the result always comes back to the CPU
    assert gpu.stats["fvu"] == pytest.approx(cpu.stats["fvu"], rel=0.15)
    assert gpu.stats["l0"] == pytest.approx(cpu.stats["l0"], rel=0.15)


def test_bad_training_inputs(small, tmp_path, capsys):
    bad = small.x.copy()
    bad[1234, 5] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    assert main(["train", str(tmp_path / "nan.npy"), "--d-sae", "32", "-o", str(tmp_path / "s")]) == 1
    assert "row 1234, column 5 is nan" in capsys.readouterr().err
    with pytest.raises(MdlsaeError, match="init SAE has d_in=8"):
        train_sae(small.x, cfg(), init=SAE.random(SAEConfig("topk", d_in=8, d_sae=64, k=4)))
    with pytest.raises(MdlsaeError, match="resume needs a checkpoint"):
        train(small.x, cfg(), resume=True)
    with pytest.raises(MdlsaeError, match="no rows"):
        train(small.x[:0], cfg())
