"""The device rANS coder (mdlsae.codec.streams) writes the CPU chunk coder's bytes and reads them
back to the CPU decoder's codes. Its host build (``_C.flat``: the driver the GPU kernels run, compiled for the CPU, on the same flat
arrays) is checked here on every machine; the CUDA kernels and the device encode path where a
GPU is present (the tests say why they skip otherwise)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from conftest import make_sae
from mdlsae import MdlsaeError
from mdlsae._native import _C, _C_cuda
from mdlsae.codec import build_model, encode
from mdlsae.codec.streams import StreamCoder
from mdlsae.measure.codes import SparseCodes
from test_codec import exclusive_codes, random_codes, random_forest, stats_of
from test_cuda_select_quantize import gpu


def both(codes, parents, chunk_rows, fps, device="cpu", exclusive=False):
    """(CPU chunk coder payloads, stream coder payloads) of the same codes and model; the stream
    coder's decode of the payloads is checked to give the codes back."""
    model = build_model(dataclasses.replace(stats_of(codes, parents), exclusive=exclusive))
    cpu = _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, chunk_rows, fps)
    t = [torch.from_numpy(a) for a in (codes.row_ptr, codes.index, codes.q)]
    coder = StreamCoder(model, device, fps)
    rows = [min(chunk_rows, codes.n_rows - i * chunk_rows) for i in range(len(cpu))]
    assert decoded(coder, cpu, rows, codes.d_sae) == codes
    return cpu, coder.encode(*t, chunk_rows=chunk_rows)


def decoded(coder, payloads, rows, d_sae) -> SparseCodes:
    return SparseCodes(*(a.cpu().numpy() for a in coder.decode(payloads, rows)), d_sae)


def random_case(rng, case):
    n, d = int(rng.integers(0, 300)), int(rng.integers(1, 48))
    parents = random_forest(rng, d) if case % 2 and d > 1 else None
    codes = random_codes(rng, n, d, parents, strict=case % 4 == 1)
    return codes, parents, int(rng.integers(1, 90)), int(rng.integers(0, d + 1))


def test_host_driver_gives_the_cpu_coders_bytes_and_codes_on_random_cases():
    rng = np.random.default_rng(16)
    multi = 0
    for case in range(120):
        codes, parents, chunk, fps = random_case(rng, case)
        cpu, flat = both(codes, parents, chunk, fps)
        assert flat == cpu, f"case {case}: n={codes.n_rows} d={codes.d_sae} chunk={chunk} fps={fps}"
        multi += len(cpu) > 1 and 0 < fps < codes.d_sae
    assert multi >= 30  # several chunks and several feature streams, not only trivial layouts


def exclusive_case(rng):
    n, d = int(rng.integers(0, 300)), int(rng.integers(2, 40))
    parents = random_forest(rng, d)
    return exclusive_codes(rng, n, d, parents), parents, int(rng.integers(1, 90)), int(rng.integers(0, d + 1))


def test_host_driver_codes_exclusive_siblings_as_the_cpu_coder():
    # Children placed in their contexts per chunk, then decoded one (depth, rank) level at a time
    # across feature streams: the CPU chunk coder's bytes and the codes back.
    rng = np.random.default_rng(17)
    multi = 0
    for case in range(60):
        codes, parents, chunk, fps = exclusive_case(rng)
        cpu, flat = both(codes, parents, chunk, fps, exclusive=True)
        assert flat == cpu, f"case {case}: n={codes.n_rows} d={codes.d_sae} chunk={chunk} fps={fps}"
        multi += len(cpu) > 1 and 0 < fps < codes.d_sae
    assert multi >= 15


def test_host_driver_refuses_siblings_together():
    parents = np.array([-1, 0, 0])
    two = SparseCodes(np.array([0, 2, 4]), np.array([0, 1, 0, 2], np.int32), np.ones(4, np.int32), 3)
    model = build_model(dataclasses.replace(stats_of(two, parents), exclusive=True))
    coder = StreamCoder(model, "cpu")
    t = [torch.tensor([0, 3, 4]), torch.tensor([0, 1, 2, 0], dtype=torch.int32), torch.ones(4, dtype=torch.int32)]
    with pytest.raises(MdlsaeError, match="feature 2 is active in a row of its parent that an earlier sibling holds"):
        coder.encode(*t, chunk_rows=16)


@pytest.mark.parametrize("with_parents", [False, True])
def test_host_driver_long_gaps(with_parents):
    """Rare features over many rows: large m, long runs of "continue" and partial blocks."""
    rng = np.random.default_rng(5)
    d = 12
    parents = random_forest(rng, d) if with_parents else None
    codes = random_codes(rng, 20000, d, parents)
    keep = np.r_[True, rng.random(codes.nnz - 1) < 0.02]  # thin to rates ~1e-3
    rows = np.repeat(np.arange(codes.n_rows), np.diff(codes.row_ptr))[keep]
    row_ptr = np.zeros(codes.n_rows + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=codes.n_rows), out=row_ptr[1:])
    codes = type(codes)(row_ptr, codes.index[keep], codes.q[keep], d)
    for chunk, fps in [(20000, 0), (7000, 5), (4096, 1)]:
        cpu, flat = both(codes, parents, chunk, fps)
        assert flat == cpu


@pytest.mark.parametrize("fps,exclusive", [(0, False), (3, False), (3, True)])
def test_host_decoder_fails_where_the_cpu_decoder_does(fps, exclusive):
    """Damaged payloads (bit flips, truncation, an extra word) below the container's checksums:
    an MdlsaeError wherever the CPU decoder raises, and its codes wherever it does not."""
    rng = np.random.default_rng(3)
    parents = random_forest(rng, 20)
    codes = (exclusive_codes if exclusive else random_codes)(rng, 400, 20, parents)
    model = build_model(dataclasses.replace(stats_of(codes, parents), exclusive=exclusive))
    payloads = _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, 150, fps)
    coder, rows = StreamCoder(model, "cpu", fps), [150, 150, 100]
    detected = 0
    for trial in range(150):
        bad = [bytearray(p) for p in payloads]
        c = int(rng.integers(0, 3))
        if trial % 5 == 0:
            bad[c] = bad[c][: 4 * int(rng.integers(0, len(bad[c]) // 4))]
        elif trial % 5 == 1:
            bad[c] += bytes(4)
        else:
            bad[c][rng.integers(0, len(bad[c]))] ^= 1 << int(rng.integers(0, 8))
        bad = [bytes(p) for p in bad]
        try:
            want = SparseCodes(*_C.decode_chunks(model, bad, rows, fps), 20)
        except RuntimeError:
            with pytest.raises(MdlsaeError, match="damaged"):
                coder.decode(bad, rows)
            detected += 1
            continue
        assert decoded(coder, bad, rows, 20) == want
    assert detected > 120
    with pytest.raises(MdlsaeError, match="whole number of 32-bit words"):
        coder.decode([payloads[0][:-1], payloads[1], payloads[2]], rows)


def test_host_driver_refuses_codes_its_model_cannot_code():
    rng = np.random.default_rng(1)
    codes = random_codes(rng, 50, 6)
    model = build_model(stats_of(codes))
    t = [torch.from_numpy(a) for a in (codes.row_ptr, codes.index, codes.q)]
    bad = t[2].clone()
    bad[-1] = 999_999  # a value no histogram holds
    with pytest.raises(MdlsaeError, match="not in its value table"):
        StreamCoder(model, "cpu", 2).encode(t[0], t[1], bad, chunk_rows=16)
    with pytest.raises(ValueError, match="not in its value table"):
        _C.encode_chunks(model, codes.row_ptr, codes.index, bad.numpy(), 16, 2)
    wide = t[1].clone()
    wide[0] = 6
    with pytest.raises(MdlsaeError, match=r"outside \[0, 6\)"):
        StreamCoder(model, "cpu").encode(t[0], wide, t[2], chunk_rows=16)
    short = t[0].clone()
    short[-1] -= 1
    with pytest.raises(MdlsaeError, match="codes are inconsistent"):
        StreamCoder(model, "cpu").encode(short, t[1], t[2], chunk_rows=16)


@pytest.mark.skipif(_C_cuda is None, reason="mdlsae was built without CUDA")
def test_cuda_coder_is_built_with_the_host_builds_interface():
    """The CUDA module carries the GPU coder (checked without a device: no streams, no launch)."""
    assert {"rans_encode", "rans_decode"} <= set(_C_cuda.build_info()["cuda_kernels"])
    rng = np.random.default_rng(2)
    codes = random_codes(rng, 10, 4)
    coder = StreamCoder(build_model(stats_of(codes)), "cpu")
    args = {k: 0 for k in coder.tables} | dict(d_sae=4, n_chunks=0, chunk_rows=1, total_rows=0, n_streams=1,
                                               per=4, col_ptr=0, col_row=0, col_q=0, scratch_on=0, scratch_off=0)
    args |= {k: 0 for k in ("data", "chunk_off", "level_start", "count", "taken", "held", "place")}
    args["exclusive"] = False
    for m in (_C.flat, _C_cuda):
        m.stream_bounds(args, bound=0)
        m.encode_streams(args, word_off=0, words=0, states=0, n_words=0, status=0)
        m.write_streams(args, word_off=0, words=0, states=0, n_words=0, byte_off=0, out=0)
        m.place_siblings(args, status=0)
        m.decode_begin(args, states=0)
        m.decode_level(args, level=0, write=True, states=0)
        m.decode_end(args, states=0, status=0)
    assert _C.flat.decode_state_bytes == _C_cuda.decode_state_bytes


@gpu
def test_gpu_coder_gives_the_cpu_coders_bytes_and_codes_on_random_cases():
    rng = np.random.default_rng(16)
    for case in range(120):
        codes, parents, chunk, fps = random_case(rng, case)
        cpu, dev = both(codes, parents, chunk, fps, device="cuda")
        assert dev == cpu, f"case {case}"
    for case in range(60):
        codes, parents, chunk, fps = exclusive_case(rng)
        cpu, dev = both(codes, parents, chunk, fps, device="cuda", exclusive=True)
        assert dev == cpu, f"exclusive case {case}"


def exact_sae(arch: str):
    """An SAE whose encoder GEMM is exact in float32 on any device and in any summation order
    (weights and biases on a 1/16 grid; exact_rows on a 1/8 grid): CPU and GPU then see the
    same pre-activations, so their files must be byte-identical."""
    sae = make_sae(arch)
    with torch.no_grad():
        for p in (sae.W_enc, sae.b_enc, sae.b_dec):
            p.copy_(torch.round(p * 16) / 16)
    return sae


def exact_rows(toy) -> torch.Tensor:
    return torch.round(torch.from_numpy(toy.x) * 8) / 8


def chunks_of(path):
    from mdlsae.codec import MdlFile

    with MdlFile(path) as f:
        return f.model.pack(), [f.read_chunk(i) for i in range(len(f.chunks))]


def test_encode_through_the_stream_coder_writes_the_cpu_file(tmp_path, toy, monkeypatch):
    """The device encode's second pass (batches sized for the coder's buffers, the stream coder),
    here with the coder's host build in place of the GPU's."""
    from mdlsae.codec import api

    sae, x = exact_sae("topk"), exact_rows(toy)
    encode(x, sae, tmp_path / "cpu.mdl", step=0.05, chunk_rows=256, features_per_stream=5)
    monkeypatch.setattr(api, "_device_coder", lambda model, device, fps: StreamCoder(model, "cpu", fps))
    monkeypatch.setenv("MDLSAE_MEMORY", "16M")
    encode(x, sae, tmp_path / "flat.mdl", step=0.05, chunk_rows=256, features_per_stream=5)
    assert chunks_of(tmp_path / "cpu.mdl") == chunks_of(tmp_path / "flat.mdl")


def test_device_flag_refuses_a_missing_device(sae_dir, toy_npy, tmp_path, capsys):
    from mdlsae.cli import main

    base = ["encode", str(toy_npy), "--sae", str(sae_dir), "--step", "0.1", "-o", str(tmp_path / "a.mdl")]
    assert main(base + ["--device", "tpu"]) != 0
    assert "--device must be cpu, cuda or cuda:N" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(base + ["--device", "cuda"]) != 0
        assert "sees no CUDA device" in capsys.readouterr().err
    assert not (tmp_path / "a.mdl").exists()
    assert main(base + ["--device", "cpu", "--features-per-stream", "16"]) == 0
    for cmd in (["dl", "--step", "0.1"], ["parents", "--step", "0.1"], ["select", "--tolerance", "1"]):
        assert main([cmd[0], str(toy_npy), "--sae", str(sae_dir), *cmd[1:], "--device", "tpu"]) != 0
        assert "--device must be cpu, cuda or cuda:N" in capsys.readouterr().err
        assert main([cmd[0], str(toy_npy), "--sae", str(sae_dir), *cmd[1:], "--device", "cpu", "--json"]) == 0


@gpu
@pytest.mark.parametrize("arch", ["topk", "jumprelu", "relu"])
def test_gpu_encode_writes_the_cpu_file(tmp_path, toy, arch):
    """The whole encode on the device (GEMM, fused select, histograms, GPU coder) gives the CPU's
    file byte for byte (the creation time in the header aside)."""
    sae, x = exact_sae(arch), exact_rows(toy)
    encode(x, sae, tmp_path / "cpu.mdl", step=0.05, chunk_rows=500, features_per_stream=7)
    encode(x, sae.to("cuda"), tmp_path / "gpu.mdl", step=0.05, chunk_rows=500, features_per_stream=7)
    assert chunks_of(tmp_path / "cpu.mdl") == chunks_of(tmp_path / "gpu.mdl")
    from mdlsae.codec import decode

    assert decode(tmp_path / "gpu.mdl", sae).codes == decode(tmp_path / "gpu.mdl").codes  # GPU, CPU decoder


@gpu
def test_gpu_dl_matches_cpu(toy):
    from mdlsae.measure.dl import measure_dl

    sae, x = exact_sae("topk"), exact_rows(toy)
    a = measure_dl(x, sae, step=0.05)
    b = measure_dl(x, sae.to("cuda"), step=0.05)
    assert a.dl_bits_per_row == b.dl_bits_per_row and a.l0 == b.l0
    assert b.mse == pytest.approx(a.mse, rel=1e-5)
