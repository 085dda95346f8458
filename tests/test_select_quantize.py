"""The fused native kernel agrees exactly with the plain torch reference (DESIGN §2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mdlsae
from mdlsae import MdlsaeError
from mdlsae.measure import reference
from mdlsae.measure.kernels import Histogram, select_quantize

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def hist_dict(h: Histogram) -> dict:
    ptr, q, count = h.to_csr()
    feats = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
    return {(int(f), int(v)): int(c) for f, v, c in zip(feats, q, count)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["topk", "threshold", "relu"])
def test_matches_reference_on_random_cases(dtype, mode):
    rng = np.random.default_rng(hash((str(dtype), mode)) % 2**32)
    for case in range(25):
        n, d = int(rng.integers(0, 40)), int(rng.integers(1, 300))
        pre = (torch.from_numpy(rng.normal(size=(n, d)) * rng.uniform(0.1, 5)).float()).to(dtype)
        k = int(rng.integers(1, d + 1)) if mode == "topk" else 0
        thr = rng.uniform(-0.5, 1.0, size=d).astype(np.float32) if mode == "threshold" else None
        step = (float(rng.uniform(0.01, 1.0)) if case % 2 else
                rng.uniform(0.01, 1.0, size=d).astype(np.float32))
        h = Histogram(d, dense_cap=int(rng.integers(2, 70)))
        got = select_quantize(pre, k=k, threshold=thr, step=step, hist=h)
        want = reference.select_quantize(pre.float(), k=k, threshold=thr, step=step)
        assert got == want, f"case {case}: n={n} d={d} k={k}"
        assert hist_dict(h) == reference.histogram(want)
        assert h.rows == n
        np.testing.assert_array_equal(h.active_counts(), np.bincount(want.index, minlength=d))


@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_ties_prefer_lower_index(dtype):
    # Small integers make ties everywhere, also across the k-th boundary.
    g = torch.Generator().manual_seed(0)
    pre = torch.randint(-3, 4, (200, 64), generator=g).to(dtype)
    for k in (1, 5, 17, 64):
        got = select_quantize(pre, k=k, step=1.0)
        assert got == reference.select_quantize(pre.float(), k=k, step=1.0)


def test_rounds_half_to_even():
    pre = torch.tensor([[0.5, 1.5, 2.5, 0.49, 0.51]])
    codes = select_quantize(pre, k=0, step=1.0)
    assert codes.index.tolist() == [1, 2, 4] and codes.q.tolist() == [2, 2, 1]


def test_result_independent_of_thread_count():
    pre = torch.randn(500, 1000, generator=torch.Generator().manual_seed(1))
    runs = []
    for t in (1, 2, 3):
        mdlsae.set_num_threads(t)
        h = Histogram(1000)
        runs.append((select_quantize(pre, k=32, step=0.05, hist=h), hist_dict(h)))
    mdlsae.set_num_threads(0)
    assert all(r == runs[0] for r in runs)


def test_overflow_histogram_is_exact():
    pre = torch.tensor([[1000.0, 3.0, 70.0], [1000.0, 0.0, 70.0]])
    h = Histogram(3, dense_cap=4)
    select_quantize(pre, k=0, step=1.0, hist=h)
    assert hist_dict(h) == {(0, 1000): 2, (1, 3): 1, (2, 70): 2}


def test_bad_arguments_raise_clear_errors():
    pre = torch.randn(4, 8)
    with pytest.raises(MdlsaeError, match="step too small"):
        select_quantize(pre * 1e6, k=2, step=1e-3)
    with pytest.raises(MdlsaeError, match="positive"):
        select_quantize(pre, k=2, step=0.0)
    with pytest.raises(MdlsaeError, match=r"shape \[8\]"):
        select_quantize(pre, k=2, step=np.ones(3, dtype=np.float32))
    with pytest.raises(MdlsaeError, match="k must be"):
        select_quantize(pre, k=9, step=1.0)
    with pytest.raises(MdlsaeError, match="2-D"):
        select_quantize(pre[0], k=2, step=1.0)
    with pytest.raises(MdlsaeError, match="histogram has d_sae"):
        select_quantize(pre, k=2, step=1.0, hist=Histogram(5))


def test_non_contiguous_rows():
    base = torch.randn(50, 40)
    view = base[:, :30]  # row stride 40
    assert select_quantize(view, k=7, step=0.1) == reference.select_quantize(view, k=7, step=0.1)


@pytest.mark.parametrize("dtype", DTYPES)
def test_wide_rows_sampled_threshold_path(dtype):
    # d >= 1024 takes the sampled-threshold TopK; every row shape that could fool the sample:
    # sorted rows (biased sample), few positives, heavy ties, a single huge outlier.
    g = torch.Generator().manual_seed(7)
    d = 3000
    rows = [
        torch.randn(20, d, generator=g),
        torch.sort(torch.randn(20, d, generator=g), dim=1).values,
        torch.sort(torch.randn(20, d, generator=g), dim=1, descending=True).values,
        torch.randn(20, d, generator=g) - 3.0,
        torch.randint(-2, 3, (20, d), generator=g).float(),
        torch.where(torch.arange(d) == 2999, 100.0, -torch.rand(20, d, generator=g)),
    ]
    pre = torch.cat(rows).to(dtype)
    for k in (1, 8, 64, 200, 375):
        got = select_quantize(pre, k=k, step=0.01)
        assert got == reference.select_quantize(pre.float(), k=k, step=0.01), k


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("k", [0, 9])
def test_bias_added_in_the_kernel_is_the_reference_sum(dtype, k):
    """The encoder bias added as each row is read gives the codes of pre + bias in float32."""
    g = torch.Generator().manual_seed(11)
    pre = torch.randn(257, 700, generator=g).to(dtype)
    bias = torch.randn(700, generator=g)
    got = select_quantize(pre, k=k, step=0.07, bias=bias)
    assert got == reference.select_quantize(pre.float(), k=k, step=0.07, bias=bias)
    assert got == select_quantize(pre.float() + bias, k=k, step=0.07)
    assert got.nnz > 1000
