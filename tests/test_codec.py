"""The arithmetic coder and the .mdl file: exact round trips, golden bytes, the payload matching
the entropy estimate, and damage always detected (DESIGN §3–4)."""

from __future__ import annotations

import dataclasses
import hashlib
import math

import numpy as np
import pytest
import torch

from conftest import make_sae
from mdlsae import MdlsaeError
from mdlsae.codec import reference as codec_reference
from mdlsae._native import _C
from mdlsae.cli import main
from mdlsae.codec import auto_chunk_rows, build_model, decode, encode, inspect
from mdlsae.codec.api import CHUNK_BITS
from mdlsae.codec.container import MdlFile
from mdlsae.measure.codes import SparseCodes
from mdlsae.measure.entropy import FeatureStats, parent_cooccurrence
from mdlsae.measure.kernels import Histogram, select_quantize
from mdlsae.data import make_toy


def random_codes(rng, n, d, parents=None, strict=False):
    rates = rng.uniform(0, 0.5, size=d) ** 2
    if d > 2:
        rates[0], rates[1] = 0.0, 1.0  # an empty feature and one active in every row
    act = rng.random((n, d)) < rates
    if parents is not None:
        for f in np.argsort(_depth(parents)):
            if parents[f] >= 0:
                with_par = act[:, parents[f]]
                act[:, f] &= with_par if strict else (with_par | (rng.random(n) < 0.1))
    q = rng.geometric(rng.uniform(0.2, 0.9, size=d), size=(n, d)).astype(np.int32)
    q[:, -1] *= 1000  # large values take the histogram's overflow path
    rows, cols = np.nonzero(act)
    row_ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(act.sum(1), out=row_ptr[1:])
    return SparseCodes(row_ptr, cols.astype(np.int32), q[rows, cols], d)


def _depth(parents):
    depth = np.zeros(len(parents), dtype=int)
    for f in range(len(parents)):
        p = parents[f]
        while p >= 0:
            depth[f] += 1
            p = parents[p]
    return depth


def stats_of(codes: SparseCodes, parents=None) -> FeatureStats:
    h = Histogram(codes.d_sae, dense_cap=8)
    h.add_codes(codes.index, codes.q, codes.n_rows)
    ptr, q, count = h.to_csr()
    wp = parent_cooccurrence(codes, parents) if parents is not None else None
    return FeatureStats(codes.n_rows, h.active_counts(), ptr, q, count, parents, wp)


def round_trip(codes, parents=None, chunk_rows=37, fps=0, exclusive=False):
    model = build_model(dataclasses.replace(stats_of(codes, parents), exclusive=exclusive))
    payloads = _C.encode_chunks(model, codes.row_ptr, codes.index, codes.q, chunk_rows, fps)
    rows = [min(chunk_rows, codes.n_rows - i * chunk_rows) for i in range(len(payloads))]
    back = SparseCodes(*_C.decode_chunks(model, payloads, rows, fps), codes.d_sae)
    return back, payloads, model


def random_forest(rng, d):
    """Parents among earlier features, about 60 % of features with one."""
    parents = np.full(d, -1, dtype=np.int64)
    for f in range(1, d):
        if rng.random() < 0.6:
            parents[f] = int(rng.integers(0, f))
    return parents


def test_round_trip_random_cases():
    rng = np.random.default_rng(0)
    for case in range(60):
        n, d = int(rng.integers(0, 200)), int(rng.integers(1, 40))
        parents = random_forest(rng, d) if case % 2 and d > 1 else None
        codes = random_codes(rng, n, d, parents, strict=case % 4 == 1)
        chunk = int(rng.integers(1, 80))
        fps = int(rng.integers(0, d + 1))
        back, _, _ = round_trip(codes, parents, chunk, fps)
        assert back == codes, f"case {case}: n={n} d={d} chunk={chunk} fps={fps}"


def rows_of(codes: SparseCodes, a: int, b: int) -> SparseCodes:
    lo, hi = codes.row_ptr[a], codes.row_ptr[b]
    return SparseCodes(codes.row_ptr[a:b + 1] - lo, codes.index[lo:hi], codes.q[lo:hi], codes.d_sae)


@pytest.mark.parametrize("case", range(8))
def test_bytes_match_plain_reference(case):
    # The native coder (reciprocals, reverse walks, lanes in registers) writes exactly the bytes
    # of a plain transcription of the format with integer division (mdlsae.codec.reference).
    rng = np.random.default_rng(100 + case)
    n, d = int(rng.integers(1, 150)), int(rng.integers(2, 14))
    parents = random_forest(rng, d) if case % 2 else None
    codes = random_codes(rng, n, d, parents, strict=case % 4 == 1)
    chunk, fps = int(rng.integers(1, n + 1)), int(rng.integers(0, d + 1))
    _, payloads, model = round_trip(codes, parents, chunk, fps)
    counts = model.counts()
    for i, payload in enumerate(payloads):
        part = rows_of(codes, i * chunk, min(n, (i + 1) * chunk))
        assert payload == codec_reference.encode_chunk(part, counts, n, fps), f"chunk {i}"


@pytest.mark.parametrize("with_parents", [False, True])
def test_bytes_match_plain_reference_long_gaps(with_parents):
    # Rare features over many rows: gap parameters m up to 12, so the grouped symbols of whole
    # blocks (a head and up to two 4-bit groups) and long runs of "continue" are all coded.
    rng = np.random.default_rng(7)
    n, rates = 30_000, np.array([3e-4, 1e-3, 4e-3, 0.02, 0.1, 0.5, 0.97])
    act = rng.random((n, len(rates))) < rates
    parents = np.array([-1, -1, 1, -1, 3, -1, 5]) if with_parents else None
    rows, cols = np.nonzero(act)
    codes = SparseCodes(np.concatenate([[0], np.cumsum(act.sum(1))]).astype(np.int64), cols.astype(np.int32),
                        rng.integers(1, 6, size=len(rows)).astype(np.int32), len(rates))
    back, payloads, model = round_trip(codes, parents, chunk_rows=12_000)
    assert back == codes
    m = model.counts()["m_main"]
    assert m.max() >= 9 and m.min() <= 1, m  # the cases above are really exercised
    for i, payload in enumerate(payloads):
        part = rows_of(codes, i * 12_000, min(n, (i + 1) * 12_000))
        assert payload == codec_reference.encode_chunk(part, model.counts(), n), f"chunk {i}"


def exclusive_codes(rng, n, d, parents, off_rate=0.05):
    """Codes where, in each row of a parent, at most one of its children fires (a strict tree's
    siblings), and children also fire now and then without their parent (quantization can drop a
    parent and keep its child), siblings together there."""
    act = rng.random((n, d)) < rng.uniform(0.05, 0.6, size=d)
    for f in np.argsort(_depth(parents), kind="stable"):
        kids = np.flatnonzero(parents == f)
        if len(kids):
            pick = rng.integers(-1, len(kids), size=n)  # -1: no child in this row
            for i, c in enumerate(kids):
                act[:, c] = np.where(act[:, f], pick == i, rng.random(n) < off_rate)
    q = rng.geometric(0.4, size=(n, d)).astype(np.int32)
    rows, cols = np.nonzero(act)
    return SparseCodes(np.concatenate([[0], np.cumsum(act.sum(1))]).astype(np.int64), cols.astype(np.int32),
                       q[rows, cols], d)


@pytest.mark.parametrize("case", range(6))
def test_exclusive_siblings_round_trip_and_reference_bytes(case):
    # A strict tree's children coded over their context (the parent's rows that no earlier
    # sibling holds): exact round trips, and the plain reference's very bytes.
    rng = np.random.default_rng(300 + case)
    n, d = int(rng.integers(1, 160)), int(rng.integers(2, 16))
    parents = random_forest(rng, d)
    codes = exclusive_codes(rng, n, d, parents, off_rate=0.3 if case % 2 else 0.05)  # siblings meet off the parent
    chunk, fps = int(rng.integers(1, n + 1)), int(rng.integers(0, d + 1))
    back, payloads, model = round_trip(codes, parents, chunk, fps, exclusive=True)
    assert model.exclusive and back == codes
    counts = model.counts()
    for i, payload in enumerate(payloads):
        part = rows_of(codes, i * chunk, min(n, (i + 1) * chunk))
        assert payload == codec_reference.encode_chunk(part, counts, n, fps), f"chunk {i}"


def test_exclusive_siblings_cost_less_and_payload_meets_estimate():
    rng = np.random.default_rng(5)
    parents = np.array([-1, -1, 0, 0, 0, 1, 1, 2, 2, 5, -1])
    codes = exclusive_codes(rng, 60_000, len(parents), parents, off_rate=0.01)
    sizes = {}
    for exclusive in (False, True):
        stats = dataclasses.replace(stats_of(codes, parents), exclusive=exclusive)
        back, payloads, model = round_trip(codes, parents, 1 << 20, exclusive=exclusive)
        assert back == codes
        if exclusive:  # parents of > 1,024 rows: the held rows' block counts are used
            assert payloads[0] == codec_reference.encode_chunk(codes, model.counts(), codes.n_rows)
        payload = 8 * sum(len(p) for p in payloads)
        sizes[exclusive] = payload
        assert abs(payload - stats.estimate_bits()) < 2e-4 * stats.estimate_bits() + 600
    assert sizes[True] < 0.97 * sizes[False], sizes


def test_exclusive_siblings_refuse_siblings_together():
    parents = np.array([-1, 0, 0])
    codes = SparseCodes(np.array([0, 3]), np.array([0, 1, 2], np.int32), np.ones(3, np.int32), 3)
    stats = dataclasses.replace(stats_of(codes, parents), exclusive=True)
    with pytest.raises(MdlsaeError, match="feature 2 and an earlier sibling are active in the same rows"):
        build_model(stats)  # the counts themselves cannot hold both
    two = SparseCodes(np.array([0, 2, 4]), np.array([0, 1, 0, 2], np.int32), np.ones(4, np.int32), 3)
    model = build_model(dataclasses.replace(stats_of(two, parents), exclusive=True))
    swapped = SparseCodes(np.array([0, 3, 4]), np.array([0, 1, 2, 0], np.int32), np.ones(4, np.int32), 3)
    with pytest.raises(ValueError, match="feature 2 is active in a row of its parent that an earlier sibling holds"):
        _C.encode_chunks(model, swapped.row_ptr, swapped.index, swapped.q, 16, 0)


def test_exclusive_siblings_damage_is_an_error_not_a_crash():
    rng = np.random.default_rng(9)
    parents = np.array([-1, 0, 0, 0, 1, 1, -1, 6, 6])
    codes = exclusive_codes(rng, 400, len(parents), parents)
    _, payloads, model = round_trip(codes, parents, 400, exclusive=True)
    for trial in range(300):
        bad = bytearray(payloads[0])
        for _ in range(1 + trial % 3):
            bad[int(rng.integers(0, len(bad)))] ^= 1 << int(rng.integers(0, 8))
        try:
            back = SparseCodes(*_C.decode_chunks(model, [bytes(bad)], [400], 0), len(parents))
        except RuntimeError:
            continue
        assert back.n_rows == 400  # decoded cleanly: a valid (other) chunk of these rows


def test_old_format_version_refused(tmp_path):
    sae = make_sae("topk")
    encode(torch.randn(20, 16), sae, tmp_path / "a.mdl", step=0.1)
    raw = bytearray((tmp_path / "a.mdl").read_bytes())
    raw[8:10] = (2).to_bytes(2, "little")  # the version field after the magic
    (tmp_path / "old.mdl").write_bytes(bytes(raw))
    with pytest.raises(MdlsaeError, match="format version 2, written by an older mdlsae; this one reads version 4"):
        decode(tmp_path / "old.mdl", sae)


@pytest.mark.parametrize("n", [0, 1])
def test_zero_and_one_row(tmp_path, n):
    sae = make_sae("topk")
    x = torch.randn(n, 16)
    info = encode(x, sae, tmp_path / "a.mdl", step=0.1)
    assert info.n_rows == n and info.n_chunks == n
    assert decode(tmp_path / "a.mdl", sae).codes == select_quantize(sae.pre_acts(x).detach(), k=4, step=0.1)


def test_golden_bitstream():
    # Fixed codes -> fixed bytes: any change to the coder or its tables shows up here.
    rng = np.random.default_rng(1234)
    codes = random_codes(rng, 300, 12)
    parents = np.array([-1, -1, 0, 0, 1, -1, 5, 5, 6, -1, -1, 2])
    _, payloads, model = round_trip(codes, None, chunk_rows=128)
    _, payloads_p, model_p = round_trip(codes, parents, chunk_rows=128)
    digest = hashlib.sha256(b"".join(payloads) + model.pack() + b"".join(payloads_p) + model_p.pack()).hexdigest()
    assert [len(p) for p in payloads] == GOLDEN_SIZES
    assert digest == GOLDEN_SHA256


GOLDEN_SIZES = [108, 108, 52]  # format version 3
GOLDEN_SHA256 = "baced9c5ec14989d00cb69a9715e56ff4dcac2976e6e8aa50e63df2cf4a69cbc"


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    toy = make_toy(n_rows=120_000, d=32, n_features=128, mean_active=4, seed=5)
    sae = make_sae("topk", d_in=32, d_sae=128, k=5, seed=2)
    path = tmp_path_factory.mktemp("mdl") / "big.mdl"
    info = encode(toy.x, sae, path, step=0.05, chunk_rows=16384)
    return toy, sae, path, info


def test_payload_matches_estimate_and_decodes_exactly(big_file):
    toy, sae, path, info = big_file
    assert info.n_rows == 120_000 and info.n_chunks == 8
    assert 0 <= info.overhead < 0.003, info.overhead
    with torch.no_grad():
        want = select_quantize(sae.pre_acts(torch.from_numpy(toy.x)), k=5, step=0.05)
    dec = decode(path, sae)
    assert dec.codes == want
    torch.testing.assert_close(dec.reconstruction, want.reconstruct(0.05, sae.W_dec.detach(), sae.b_dec.detach()))
    part = decode(path, start=20_000, stop=40_001).codes
    assert part.n_rows == 20_001
    assert np.array_equal(part.index, want.index[want.row_ptr[20_000]:want.row_ptr[40_001]])


def test_automatic_chunks_keep_the_payload_within_two_ten_thousandths(big_file, tmp_path):
    # issue 12: 16,384-row chunks of these sparse codes cost +0.02 % in per-stream overhead
    toy, sae, _, fixed = big_file
    auto = encode(toy.x, sae, tmp_path / "auto.mdl", step=0.05)
    assert auto.payload_bits >= 1e6 and auto.chunk_rows & (auto.chunk_rows - 1) == 0
    per_row = auto.estimate_bits / auto.n_rows
    assert CHUNK_BITS <= auto.chunk_rows * per_row < 2.2 * CHUNK_BITS  # the smallest power of two reaching 2 Mbit
    assert 0 <= auto.overhead < 2e-4 and auto.overhead < fixed.overhead
    assert decode(tmp_path / "auto.mdl").codes == decode(big_file[2]).codes
    first = decode(tmp_path / "auto.mdl", start=0, stop=8192).codes
    assert auto_chunk_rows(first) == auto.chunk_rows  # from the first rows only
    # the flat estimate it sizes by is FeatureStats's, computed from the codes alone
    est = encode(toy.x[:8192], sae, tmp_path / "first.mdl", step=0.05).estimate_bits
    assert auto.chunk_rows == 1 << math.ceil(math.log2(CHUNK_BITS / (est / 8192)))


def test_payload_matches_conditional_estimate(tmp_path):
    toy = make_toy(n_rows=100_000, d=32, n_features=64, mean_active=6, seed=9)
    sae = make_sae("relu", d_in=32, d_sae=64, seed=4)
    parents = np.full(64, -1)
    parents[32:] = np.arange(32)  # children given their parent
    encode(toy.x, sae, tmp_path / "f.mdl", step=0.05)
    cond = encode(toy.x, sae, tmp_path / "c.mdl", step=0.05, parents=parents)
    assert cond.conditional and 0 <= cond.overhead < 0.003
    assert decode(tmp_path / "c.mdl").codes == decode(tmp_path / "f.mdl").codes


def test_every_damage_is_detected(tmp_path):
    sae = make_sae("topk")
    x = torch.from_numpy(make_toy(n_rows=700, d=16, n_features=48, mean_active=3, seed=2).x)
    path = tmp_path / "a.mdl"
    encode(x, sae, path, step=0.1, chunk_rows=256)
    good = path.read_bytes()
    want = decode(path).codes
    rng = np.random.default_rng(0)
    positions = sorted(set(range(0, 64)) | set(rng.integers(0, len(good), 400).tolist()))
    bad = tmp_path / "bad.mdl"
    for pos in positions:
        for flip in (0x01, 0x80):
            data = bytearray(good)
            data[pos] ^= flip
            bad.write_bytes(bytes(data))
            with pytest.raises(MdlsaeError):
                decode(bad)
    for cut in sorted(set(rng.integers(0, len(good), 60).tolist()) | {0, 7, len(good) - 1}):
        bad.write_bytes(good[:cut])
        with pytest.raises(MdlsaeError):
            decode(bad)
    bad.write_bytes(good + b"\0")
    with pytest.raises(MdlsaeError, match="chunks end at byte"):
        inspect(bad)
    assert decode(path).codes == want


def test_decoder_survives_damaged_payloads_without_checksums():
    # Below the container's CRCs the coder itself must fail cleanly on garbage, never hang.
    rng = np.random.default_rng(3)
    codes = random_codes(rng, 400, 20)
    _, payloads, model = round_trip(codes, chunk_rows=400)
    detected = 0
    for trial in range(300):
        data = bytearray(payloads[0])
        if trial % 3 == 0:
            data = data[: rng.integers(0, len(data))]
        else:
            data[rng.integers(0, len(data))] ^= 1 << int(rng.integers(0, 8))
        try:
            back = SparseCodes(*_C.decode_chunks(model, [bytes(data)], [400], 0), 20)
            assert back.n_rows == 400
        except RuntimeError:
            detected += 1
    assert detected > 280  # the final-state check catches nearly all damage


def test_wrong_sae_refused_and_no_output_left(tmp_path, capsys):
    sae = make_sae("topk")
    sae.save(tmp_path / "s")
    make_sae("topk", seed=9).save(tmp_path / "other")
    np.save(tmp_path / "a.npy", np.random.default_rng(0).normal(size=(300, 16)).astype(np.float32))
    assert main(["encode", str(tmp_path / "a.npy"), "--sae", str(tmp_path / "s"), "-o", str(tmp_path / "a.mdl"),
                 "--step", "0.1"]) == 0
    code = main(["decode", str(tmp_path / "a.mdl"), "--sae", str(tmp_path / "other"), "-o", str(tmp_path / "r.npy")])
    err = capsys.readouterr().err
    assert code == 1 and "different SAE" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r.npy").exists()
    assert main(["decode", str(tmp_path / "a.mdl"), "--sae", str(tmp_path / "s"), "-o", str(tmp_path / "r.npy")]) == 0
    recon = np.load(tmp_path / "r.npy")
    assert recon.shape == (300, 16) and recon.dtype == np.float32
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_inspect_cli_json(tmp_path, capsys):
    sae = make_sae("relu")
    encode(torch.randn(500, 16), sae, tmp_path / "a.mdl", step=0.2)
    assert main(["inspect", str(tmp_path / "a.mdl"), "--json"]) == 0
    import json
    info = json.loads(capsys.readouterr().out)
    for key in ("n_rows", "d_in", "d_sae", "estimate_bits", "payload_bits", "model_bits", "file_bytes"):
        assert key in info
    assert info["file_bytes"] * 8 == info["payload_bits"] + info["model_bits"]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_gemm_codes(tmp_path, dtype):
    sae = make_sae("topk")
    x = torch.from_numpy(make_toy(n_rows=500, d=16, n_features=48, mean_active=3, seed=2).x)
    exact = select_quantize(sae.pre_acts(x).detach(), k=sae.cfg.k, step=0.1)
    half = sae.set_compute_dtype(dtype)
    assert half.compute_dtype == getattr(torch, dtype) and half.row_bytes() == 2 * 48 + 8 * 16
    info = encode(x, half, tmp_path / "h.mdl", step=0.1)
    codes = decode(tmp_path / "h.mdl").codes
    # the reference: the GEMM in half precision, the bias added in float32
    dt = getattr(torch, dtype)
    pre = (x.to(dt) @ sae.W_enc.detach().to(dt)).float() + (sae.b_enc - sae.b_dec @ sae.W_enc).detach()
    assert codes == select_quantize(pre, k=sae.cfg.k, step=0.1)
    assert codes != exact and abs(info.l0 - exact.nnz / 500) < 0.05  # a few codes move, not many
    with MdlFile(tmp_path / "h.mdl") as f:
        assert f.meta["compute_dtype"] == dtype
    with torch.no_grad():  # the half-precision copy of W_enc follows changes to the weights
        sae.W_enc.mul_(2)
        gemm, _ = sae.encoder_parts(x)
        assert torch.equal(gemm, x.to(dt) @ sae.W_enc.detach().to(dt))
    with pytest.raises(MdlsaeError, match="compute dtype must be one of"):
        sae.set_compute_dtype("int8")
