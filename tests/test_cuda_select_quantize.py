"""The fused CUDA kernel gives exactly the CPU kernel's codes, histograms and errors, and both
match the plain torch reference (DESIGN §2). The GPU tests skip, saying why, unless the CUDA
module was built, a device is present and torch can reach it; the module's own checks run on
any machine where it was built."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import mdlsae
from mdlsae import MdlsaeError
from mdlsae.measure import reference
from mdlsae._native import _C_cuda
from mdlsae.measure.kernels import Histogram, select_quantize
from test_select_quantize import DTYPES, hist_dict

MODES = ["topk", "threshold", "relu"]


def _gpu_missing() -> str | None:
    if _C_cuda is None:
        return "mdlsae was built without CUDA"
    if not mdlsae.cuda_available():
        return "no CUDA device (mdlsae._C_cuda.device_count() == 0)"
    if not torch.cuda.is_available():
        return f"this torch ({torch.__version__}) cannot use the CUDA device"
    return None


def gpu(test):
    missing = _gpu_missing()
    return pytest.mark.gpu(pytest.mark.skipif(missing is not None, reason=missing or "")(test))


def run_both(pre: torch.Tensor, dense_cap: int = 64, **kw):
    """GPU and CPU results of the same call: (codes, histogram dict, histogram rows) each."""
    on_gpu = torch.empty_strided(pre.shape, pre.stride(), dtype=pre.dtype, device="cuda").copy_(pre)
    out = []
    for x in (on_gpu, pre):  # the GPU copy keeps the row stride
        h = Histogram(pre.shape[1], dense_cap=dense_cap)
        codes = select_quantize(x, hist=h, **kw)
        out.append((codes, hist_dict(h), h.rows))
    return out


def random_pre(rng, n: int, d: int, dtype) -> torch.Tensor:
    kind = rng.integers(0, 4)
    if kind == 0:
        x = rng.normal(size=(n, d)) * rng.uniform(0.1, 5)
    elif kind == 1:  # ties everywhere, also across the k-th boundary
        x = rng.integers(-3, 4, size=(n, d))
    elif kind == 2:  # mostly negative
        x = rng.normal(-2.0, 1.0, size=(n, d))
    else:  # all equal: the tie-break is decided by the index bits alone
        x = np.ones((n, d))
    pre = torch.from_numpy(x).float().to(dtype)
    if rng.integers(0, 3) == 0:  # rows with a stride larger than d_sae
        pre = torch.cat([pre, torch.zeros(n, 5, dtype=dtype)], dim=1)[:, :d]
    return pre


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
def test_matches_cpu_and_reference_on_random_cases(dtype, mode):
    rng = np.random.default_rng([DTYPES.index(dtype), MODES.index(mode)])
    for case in range(30):
        # Widths around the 4096-key shared-memory buffer and above it take different paths.
        d = int(rng.choice([1, 2, 7, 64, 300, 4095, 4096, 4097, 9000, 24576]))
        n = int(rng.integers(0, 40 if d < 9000 else 8))
        pre = random_pre(rng, n, d, dtype)
        k = int(rng.integers(1, min(d, 256) + 1)) if mode == "topk" else 0
        thr = rng.uniform(-0.5, 1.0, size=d).astype(np.float32) if mode == "threshold" else None
        step = (float(rng.uniform(0.01, 1.0)) if case % 2 else
                rng.uniform(0.01, 1.0, size=d).astype(np.float32))
        (got, got_h, got_rows), (cpu, cpu_h, cpu_rows) = run_both(
            pre, dense_cap=int(rng.integers(2, 70)), k=k, threshold=thr, step=step)
        assert got == cpu, f"case {case}: n={n} d={d} k={k}"
        assert got_h == cpu_h and got_rows == cpu_rows == n
        assert got == reference.select_quantize(pre.float(), k=k, threshold=thr, step=step)


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_ties_prefer_lower_index(dtype):
    g = torch.Generator().manual_seed(0)
    for d in (64, 5000):
        pre = torch.randint(-3, 4, (50, d), generator=g).to(dtype)
        for k in (1, 5, 17, 64, 256):
            got = select_quantize(pre.cuda(), k=k, step=1.0)
            assert got == reference.select_quantize(pre.float(), k=k, step=1.0)


@gpu
@pytest.mark.parametrize("d,k", [(131072, 256), (131072, 1), (24576, 64)])
def test_widest_rows(d, k):
    pre = torch.randn(6, d, generator=torch.Generator().manual_seed(d + k)).to(torch.bfloat16)
    (got, got_h, _), (cpu, cpu_h, _) = run_both(pre, k=k, step=0.05)
    assert got == cpu and got_h == cpu_h


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
def test_special_values(dtype):
    # NaN and zeros are never selected; subnormals quantize to 0 (f32/f16) and are dropped.
    v = [float("nan"), 0.0, -0.0, 1e-40, 6e-8, -5.0, 2.5, 0.5, 1.5, 3.0]
    pre = torch.tensor([v, v[::-1]]).to(dtype)
    for kw in (dict(k=3), dict(k=10), dict(k=0), dict(k=0, threshold=np.full(10, 1.0, np.float32))):
        (got, got_h, _), (cpu, cpu_h, _) = run_both(pre, step=1.0, **kw)
        assert got == cpu and got_h == cpu_h, kw


@gpu
def test_rounds_half_to_even():
    codes = select_quantize(torch.tensor([[0.5, 1.5, 2.5, 0.49, 0.51]]).cuda(), k=0, step=1.0)
    assert codes.index.tolist() == [1, 2, 4] and codes.q.tolist() == [2, 2, 1]


@gpu
def test_overflow_histogram_is_exact():
    pre = torch.tensor([[1000.0, 3.0, 70.0], [1000.0, 0.0, 70.0]])
    (_, got_h, _), (_, cpu_h, _) = run_both(pre, dense_cap=4, k=0, step=1.0)
    assert got_h == cpu_h == {(0, 1000): 2, (1, 3): 1, (2, 70): 2}


@gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [0, 5])
def test_bias_is_added_as_each_row_is_read(dtype, k):
    """The encoder bias the GPU kernel adds in float32 as it reads a row (as the CPU kernel does)."""
    rng = np.random.default_rng(7)
    pre = random_pre(rng, 33, 700, dtype)
    bias = rng.normal(size=700).astype(np.float32)
    (got, got_h, got_rows), (cpu, cpu_h, cpu_rows) = run_both(pre, k=k, step=0.05, bias=bias)
    assert got == cpu and got_h == cpu_h and got_rows == cpu_rows
    assert got == select_quantize(pre.float() + torch.from_numpy(bias), k=k, step=0.05)


@gpu
@pytest.mark.parametrize("k", [0, 3])
def test_step_too_small_matches_cpu_error(k):
    pre = torch.randn(64, 300, generator=torch.Generator().manual_seed(2))
    pre[17, 40] = pre[20, 3] = 1e6
    pre[9, 250] = float("inf")
    messages = []
    for x in (pre.cuda(), pre):
        h = Histogram(300)
        with pytest.raises(MdlsaeError, match="step too small") as e:
            select_quantize(x, k=k, step=1e-2, hist=h)
        messages.append(str(e.value))
        assert h.rows == 0 and hist_dict(h) == {}  # nothing counted on error
    assert messages[0] == messages[1]  # the first offending element in row order, on both paths


@gpu
def test_bad_arguments_raise_clear_errors():
    pre = torch.randn(4, 300).cuda()
    with pytest.raises(MdlsaeError, match="at most 256 on the GPU"):
        select_quantize(pre, k=257, step=1.0)
    with pytest.raises(MdlsaeError, match=r"shape \[300\]"):
        select_quantize(pre, k=0, threshold=np.ones(3, dtype=np.float32))
    with pytest.raises(MdlsaeError, match="histogram has d_sae"):
        select_quantize(pre, k=2, hist=Histogram(5))


@gpu
def test_empty_and_noncontiguous_inputs():
    assert select_quantize(torch.empty(0, 10).cuda(), k=3).row_ptr.tolist() == [0]
    base = torch.randn(50, 40)
    view = base.cuda()[:, :30]
    assert select_quantize(view, k=7, step=0.1) == select_quantize(base[:, :30], k=7, step=0.1)
    assert select_quantize(view.t().contiguous().t(), k=7, step=0.1) == select_quantize(base[:, :30], k=7, step=0.1)


@gpu
def test_runs_on_the_current_stream():
    pre = torch.randn(300, 2000, device="cuda")
    want = select_quantize(pre, k=32, step=0.05)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = select_quantize(pre, k=32, step=0.05)
    assert got == want


@pytest.mark.skipif(_C_cuda is None, reason="mdlsae was built without CUDA")
def test_cuda_module_reports_devices_kernels_and_checks_arguments():
    info = mdlsae.build_info()
    assert info["cuda_compiled"] and {"select_quantize", "histogram"} <= set(info["cuda_kernels"])
    n = _C_cuda.device_count()
    assert len(info["cuda_devices"]) == n and mdlsae.cuda_available() == (n > 0)
    if not any(Path("/dev").glob("nvidia[0-9]*")):  # no NVIDIA device node: no device
        assert n == 0
    if torch.cuda.is_available():
        assert n == torch.cuda.device_count()
    # Arguments are checked before any CUDA call, so this runs without a device too.
    args = dict(pre=0, dtype=0, rows=0, d_sae=300, row_stride=300, threshold=0, step=1.0, steps=0,
                counts=0, dense_cap=64)
    buffers = dict(row_nnz=0, slot_index=0, slot_q=0, first_error=0, stream=0)
    _C_cuda.select_quantize_rows(_C_cuda.SelectQuantizeArgs(k=3, **args), **buffers)  # no rows: no launch
    with pytest.raises(ValueError, match="at most 256 on the GPU"):
        _C_cuda.select_quantize_rows(_C_cuda.SelectQuantizeArgs(k=257, **args), **buffers)
    with pytest.raises(ValueError, match="dtype code"):
        _C_cuda.SelectQuantizeArgs(k=3, **{**args, "dtype": 7})


def test_rejects_tensors_on_other_devices():
    with pytest.raises(MdlsaeError, match="CPU or a CUDA device"):
        select_quantize(torch.empty(2, 3, device="meta"), k=1)


def test_dense_counts_and_overflow_codes_merge_like_codes():
    # The host half of the GPU histogram: dense counts of q < cap plus the codes with q >= cap.
    rng = np.random.default_rng(4)
    d, cap = 20, 8
    index = rng.integers(0, d, 500).astype(np.int32)
    q = rng.integers(1, 3 * cap, 500).astype(np.int32)
    want = Histogram(d, dense_cap=cap)
    want.add_codes(index, q, rows=50)
    dense = np.zeros(d * cap, dtype=np.uint32)
    small = q < cap
    np.add.at(dense, index[small].astype(np.int64) * cap + q[small], 1)
    got = Histogram(d, dense_cap=cap)
    got.add_dense_counts(dense, rows=50)
    got.add_codes(index[~small], q[~small], rows=0)
    assert hist_dict(got) == hist_dict(want) and got.rows == want.rows == 50
    with pytest.raises(ValueError, match="counts of q = 0"):
        got.add_dense_counts(np.ones(d * cap, dtype=np.uint32), rows=1)
    with pytest.raises(ValueError, match="d_sae \\* dense_cap"):
        got.add_dense_counts(np.zeros(3, dtype=np.uint32), rows=1)
