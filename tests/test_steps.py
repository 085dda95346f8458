"""Per-feature quantization steps in a ``.mdl`` file, end to end: ``encode`` stores them,
``decode`` reconstructs with them, ``inspect`` reports them, and the CLI path
``select --per-feature --steps-out`` → ``encode --steps`` → ``decode`` works and gives a file
whose payload matches its DL estimate."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mdlsae.cli import main
from mdlsae.codec import decode, encode
from mdlsae.data import make_toy
from mdlsae.measure.kernels import select_quantize
from mdlsae.models.sae import SAE, SAEConfig


@pytest.fixture(scope="module")
def data():
    """Toy rows and a JumpReLU SAE on the true dictionary with features in very different units
    (decoder rows × c, latents ÷ c): per-feature steps matter here."""
    toy = make_toy(n_rows=20_000, d=64, n_features=48, mean_active=3, seed=5)
    c = torch.from_numpy(np.geomspace(0.1, 10, 48)[np.random.default_rng(0).permutation(48)].astype(np.float32))
    f = torch.from_numpy(toy.features)
    sae = SAE(SAEConfig("jumprelu", d_in=64, d_sae=48))
    with torch.no_grad():
        sae.W_dec.copy_(f * c[:, None])
        sae.W_enc.copy_(f.T / c)
        sae.threshold.copy_(0.25 / c)
    return toy.x, sae


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_round_trip_with_per_feature_steps(tmp_path, data):
    x, sae = data
    steps = (0.02 * np.geomspace(0.1, 10, 48)[::-1]).astype(np.float32)  # not a multiple of one step
    info = encode(x, sae, tmp_path / "a.mdl", step=steps, chunk_rows=4096)
    assert info.step["per_feature"] is True
    assert info.step["min"] == pytest.approx(steps.min()) and info.step["max"] == pytest.approx(steps.max())
    assert "per feature (float32 [48])" in info.table()
    _, threshold, _ = sae.selection()
    with torch.no_grad():
        want = select_quantize(sae.pre_acts(torch.from_numpy(x)), threshold=threshold, step=steps)
    dec = decode(tmp_path / "a.mdl", sae)
    assert dec.codes == want
    assert isinstance(dec.step, np.ndarray) and np.array_equal(dec.step, steps)
    # the reconstruction is q_i * step_i through the decoder, with each feature's own step
    z = np.zeros((len(x), 48), np.float32)
    z[dec.codes.rows(), dec.codes.index] = dec.codes.q * steps[dec.codes.index]
    expect = z @ sae.W_dec.detach().numpy() + sae.b_dec.detach().numpy()
    np.testing.assert_allclose(dec.reconstruction.numpy(), expect, rtol=1e-5, atol=1e-5)
    median = dec.codes.reconstruct(float(np.median(steps)), sae.W_dec, sae.b_dec)
    assert not torch.allclose(median, dec.reconstruction, atol=1e-3)  # one step would not do
    # a row range decodes to the same rows
    part = decode(tmp_path / "a.mdl", sae, 5000, 9000)
    np.testing.assert_array_equal(part.reconstruction.numpy(), dec.reconstruction[5000:9000].numpy())


def test_cli_select_steps_out_then_encode_steps(capsys, tmp_path, data):
    x, sae = data
    np.save(tmp_path / "acts.npy", x)
    sae.save(tmp_path / "sae")
    code, out, err = run_cli(capsys, "select", tmp_path / "acts.npy", "--sae", tmp_path / "sae", "--tolerance",
                             0.03, "--per-feature", "--steps-out", tmp_path / "s.npy", "--json")
    assert code == 0, err
    cand = json.loads(out)["candidates"][0]
    assert cand["meets_tolerance"] and not cand["per_feature"]["fallback"]
    steps = np.load(tmp_path / "s.npy")
    assert steps.dtype == np.float32 and steps.shape == (48,) and len(np.unique(steps)) > 1

    code, out, err = run_cli(capsys, "encode", tmp_path / "acts.npy", "--sae", tmp_path / "sae",
                             "--steps", tmp_path / "s.npy", "-o", tmp_path / "a.mdl", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["step"]["per_feature"] is True
    assert abs(info["payload_bits"] - info["estimate_bits"]) <= 0.003 * info["estimate_bits"], info
    # the file's DL is the one select reported at these steps, on the same rows
    assert info["estimate_bits"] / info["n_rows"] == pytest.approx(cand["dl_bits_per_row"], rel=1e-9)

    code, out, err = run_cli(capsys, "inspect", tmp_path / "a.mdl", "--steps-out", tmp_path / "back.npy")
    assert code == 0, err
    assert "per feature (float32 [48])" in out
    np.testing.assert_array_equal(np.load(tmp_path / "back.npy"), steps)

    code, out, err = run_cli(capsys, "decode", tmp_path / "a.mdl", "--sae", tmp_path / "sae",
                             "-o", tmp_path / "recon.npy")
    assert code == 0, err
    recon = np.load(tmp_path / "recon.npy")
    mse = float(((recon.astype(np.float64) - x) ** 2).mean())
    assert mse == pytest.approx(cand["loss"], rel=1e-4) and mse <= 0.03  # what select promised


@pytest.mark.parametrize("bad,match", [
    (np.full(47, 0.1, np.float32), r"shape \[48\].*got shape \[47\]"),
    (np.full((48, 1), 0.1, np.float32), r"shape \[48\].*got shape \[48, 1\]"),
    (np.full(48, 0.1, np.float64), "must be float32.*got float64"),
    (np.arange(48, dtype=np.float32), r"positive and finite, but steps\[0\] = 0\.0"),
    (np.r_[np.full(47, 0.1), np.nan].astype(np.float32), r"steps\[47\] = nan"),
    (np.float32(-1.0), "the step = -1.0"),
])
def test_encode_steps_bad_input_is_one_clear_line(capsys, tmp_path, data, bad, match):
    x, sae = data
    np.save(tmp_path / "acts.npy", x[:100])
    sae.save(tmp_path / "sae")
    np.save(tmp_path / "bad.npy", bad)
    code, out, err = run_cli(capsys, "encode", tmp_path / "acts.npy", "--sae", tmp_path / "sae",
                             "--steps", tmp_path / "bad.npy", "-o", tmp_path / "a.mdl")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("mdlsae: error:"), err
    assert __import__("re").search(match, lines[0]), lines[0]
    assert not (tmp_path / "a.mdl").exists()


def test_encode_needs_exactly_one_of_step_and_steps(capsys, tmp_path, data):
    x, sae = data
    np.save(tmp_path / "acts.npy", x[:100])
    np.save(tmp_path / "s.npy", np.full(48, 0.1, np.float32))
    sae.save(tmp_path / "sae")
    base = ["encode", str(tmp_path / "acts.npy"), "--sae", str(tmp_path / "sae"), "-o", str(tmp_path / "a.mdl")]
    for extra, match in [([], "one of the arguments --step --steps is required"),
                         (["--step", "0.1", "--steps", str(tmp_path / "s.npy")], "not allowed with")]:
        with pytest.raises(SystemExit) as e:
            main(base + extra)
        err = capsys.readouterr().err
        assert e.value.code == 2 and match in err and "Traceback" not in err
    # a 0-d float32 file (what select saves when the global step wins) is a global step
    np.save(tmp_path / "g.npy", np.float32(0.1))
    code, out, err = run_cli(capsys, *base, "--steps", tmp_path / "g.npy", "--json")
    assert code == 0, err
    assert json.loads(out)["step"] == pytest.approx(0.1)


def test_dl_takes_the_same_steps_file(capsys, tmp_path, data):
    x, sae = data
    np.save(tmp_path / "acts.npy", x[:5000])
    sae.save(tmp_path / "sae")
    steps = (0.05 * np.geomspace(0.1, 10, 48)).astype(np.float32)
    np.save(tmp_path / "s.npy", steps)
    code, out, err = run_cli(capsys, "dl", tmp_path / "acts.npy", "--sae", tmp_path / "sae", "--steps",
                             tmp_path / "s.npy", "--json")
    assert code == 0, err
    got = json.loads(out)
    info = encode(x[:5000], sae, tmp_path / "a.mdl", step=steps)
    assert got["dl_bits_per_row"] == pytest.approx(info.estimate_bits / info.n_rows, rel=1e-9)
    assert got["step"]["per_feature"] is True
    np.save(tmp_path / "bad.npy", steps[:10])
    code, out, err = run_cli(capsys, "dl", tmp_path / "acts.npy", "--sae", tmp_path / "sae", "--steps",
                             tmp_path / "bad.npy")
    assert code == 1 and "shape [48]" in err and "got shape [10]" in err
