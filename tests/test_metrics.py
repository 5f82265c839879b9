"""Tests for attrobust.metrics: saliency maps, top-k intersection, Kendall's tau-b (scipy oracle), accuracy, and
the registry contract (every registered metric through shape and finiteness checks)."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from attrobust import _ranking
from attrobust.metrics import (
    METRIC_KIND_INPUTS,
    METRIC_KINDS,
    METRICS,
    accuracy,
    call_metric,
    kendall_tau,
    saliency_map,
    topk_intersection,
)
from conftest import make_tiny_cnn


def scipy_tau(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    """Row-wise scipy.stats.kendalltau (tau-b) as float64 numpy, NaN where scipy gives NaN."""
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True):
            out.append(stats.kendalltau(x, y, variant="b").statistic)
    return np.asarray(out, dtype=np.float64)


def assert_matches_scipy(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-6) -> None:
    ours = kendall_tau(a, b).double().numpy()
    ref = scipy_tau(a, b)
    np.testing.assert_array_equal(np.isnan(ours), np.isnan(ref))
    np.testing.assert_allclose(ours[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=0, atol=atol)


def brute_inversions(v: torch.Tensor) -> torch.Tensor:
    rows = v.tolist()
    return torch.tensor([sum(r[i] > r[j] for i in range(len(r)) for j in range(i + 1, len(r))) for r in rows])


# ---------------------------------------------------------------- saliency_map


def test_saliency_map_values():
    a = torch.tensor([[[[1.0, -2.0], [0.5, 0.0]], [[-3.0, 1.0], [0.5, -4.0]]]])  # (1, 2, 2, 2)
    expected = torch.tensor([[4.0, 3.0, 1.0, 4.0]])
    out = saliency_map(a)
    assert out.shape == (1, 4)
    torch.testing.assert_close(out, expected)


def test_saliency_map_flattens_row_major_and_keeps_batch():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, 4, 5, generator=g)
    out = saliency_map(a)
    assert out.shape == (3, 20)
    torch.testing.assert_close(out[1].view(4, 5), a[1].abs().sum(0))


def test_saliency_map_is_differentiable():
    a = torch.randn(2, 1, 3, 3, requires_grad=True)
    saliency_map(a).sum().backward()
    torch.testing.assert_close(a.grad, a.detach().sign())


@pytest.mark.parametrize("bad", [torch.zeros(2, 4), torch.zeros(1, 2, 3), torch.zeros(1, 1, 2, 2, dtype=torch.int64)])
def test_saliency_map_rejects_bad_input(bad):
    with pytest.raises(ValueError, match="expected"):
        saliency_map(bad)


# ---------------------------------------------------------------- topk_intersection


def test_topk_intersection_hand_checked():
    a = torch.tensor([[0.9, 0.1, 0.8, 0.3], [5.0, 4.0, 3.0, 2.0]])
    b = torch.tensor([[0.7, 0.6, 0.1, 0.2], [2.0, 3.0, 4.0, 5.0]])
    # row 0: top-2 {0, 2} vs {0, 1} -> 1/2; row 1: top-2 {0, 1} vs {3, 2} -> 0
    torch.testing.assert_close(topk_intersection(a, b, 2), torch.tensor([0.5, 0.0]))
    # top-3: {0, 2, 3} vs {0, 1, 3} -> 2/3; {0, 1, 2} vs {3, 2, 1} -> 2/3
    torch.testing.assert_close(topk_intersection(a, b, 3), torch.tensor([2 / 3, 2 / 3]))


def test_topk_intersection_identical_disjoint_and_full():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 50, generator=g)
    torch.testing.assert_close(topk_intersection(a, a.clone(), 7), torch.ones(4))
    ranks = a.argsort(1).argsort(1).float()  # 0 = smallest
    reversed_ = (49 - ranks).float()
    torch.testing.assert_close(topk_intersection(ranks, reversed_, 25), torch.zeros(4))
    torch.testing.assert_close(topk_intersection(a, torch.rand(4, 50, generator=g), 50), torch.ones(4))


def test_topk_intersection_on_attributions_uses_saliency_map():
    a = torch.zeros(1, 2, 2, 2)
    b = torch.zeros(1, 2, 2, 2)
    a[0, 0, 0, 0] = -10.0  # largest |a| at pixel 0 although negative
    a[0, 1, 1, 1] = 1.0
    b[0, 1, 0, 0] = 3.0  # pixel 0 via the second channel
    b[0, 0, 0, 1] = 2.0
    torch.testing.assert_close(topk_intersection(a, b, 1), torch.tensor([1.0]))
    torch.testing.assert_close(topk_intersection(a, b, 2), torch.tensor([0.5]))
    torch.testing.assert_close(topk_intersection(a, b, 2), topk_intersection(saliency_map(a), saliency_map(b), 2))


def test_topk_intersection_dtype():
    a = torch.rand(2, 10, dtype=torch.float64)
    assert topk_intersection(a, a, 3).dtype == torch.float64
    assert topk_intersection(a.float(), a.float(), 3).dtype == torch.float32


@pytest.mark.parametrize("k", [0, 11, -1, 2.0, True])
def test_topk_intersection_rejects_bad_k(k):
    a = torch.rand(2, 10)
    with pytest.raises(ValueError, match=r"expected an integer in \[1, 10\]"):
        topk_intersection(a, a, k)


def test_topk_intersection_rejects_bad_shapes_and_values():
    with pytest.raises(ValueError, match="expected equal shapes"):
        topk_intersection(torch.rand(2, 10), torch.rand(2, 9), 3)
    with pytest.raises(ValueError, match="expected equal shapes"):
        topk_intersection(torch.rand(2, 10), torch.rand(3, 10), 3)
    with pytest.raises(ValueError, match=r"expected maps \(N, D\)"):  # 3 dims would be one (C, H, W) attribution
        topk_intersection(torch.rand(2, 3, 4, 5, 6), torch.rand(2, 3, 4, 5, 6), 3)
    bad = torch.rand(2, 10)
    bad[1, 3] = float("nan")
    with pytest.raises(ValueError, match="expected finite values"):
        topk_intersection(bad, torch.rand(2, 10), 3)
    with pytest.raises(ValueError, match="non-empty"):
        topk_intersection(torch.rand(0, 10), torch.rand(0, 10), 3)


# ---------------------------------------------------------------- kendall_tau: agreement with scipy


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_kendall_matches_scipy_continuous(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 300, generator=g, dtype=torch.float64)
    b = 0.6 * a + torch.randn(16, 300, generator=g, dtype=torch.float64)
    assert_matches_scipy(a.to(dtype), b.to(dtype))


@pytest.mark.parametrize("levels", [2, 3, 7])
def test_kendall_matches_scipy_with_many_ties(levels):
    g = torch.Generator().manual_seed(levels)
    a = torch.randint(0, levels, (16, 257), generator=g).float()
    b = torch.randint(0, levels + 1, (16, 257), generator=g).float()
    b[:8] = torch.minimum(a[:8], b[:8])  # correlated rows with joint ties
    assert_matches_scipy(a, b)


def test_kendall_matches_scipy_negative_values_and_signed_zeros():
    g = torch.Generator().manual_seed(3)
    a = torch.randint(-3, 4, (6, 90), generator=g).float() * 0.25
    b = torch.randn(6, 90, generator=g)
    b[:, ::3] = -0.0
    b[:, 1::3] = 0.0  # -0.0 and 0.0 are equal: one run of ties
    assert_matches_scipy(a, b)
    assert_matches_scipy(b, a)


@pytest.mark.parametrize("d", range(1, 11))
def test_kendall_matches_scipy_small_d(d):
    g = torch.Generator().manual_seed(d)
    cont = torch.randn(12, d, generator=g), torch.randn(12, d, generator=g)
    ties = torch.randint(0, 2, (12, d), generator=g).float(), torch.randint(0, 3, (12, d), generator=g).float()
    assert_matches_scipy(*cont)
    assert_matches_scipy(*ties)


def test_kendall_matches_scipy_large_d():
    g = torch.Generator().manual_seed(7)
    a = torch.rand(2, 16384, generator=g)
    b = a + 0.5 * torch.rand(2, 16384, generator=g)
    b[1] = torch.round(b[1] * 20)  # heavy ties in one row
    assert_matches_scipy(a, b)


def test_kendall_matches_scipy_on_integer_and_half_inputs():
    g = torch.Generator().manual_seed(5)
    a = torch.randint(-5, 5, (4, 64), generator=g)
    b = torch.randint(-5, 5, (4, 64), generator=g).to(torch.int32)
    assert_matches_scipy(a, b)
    h = torch.randn(4, 64, generator=g)
    assert_matches_scipy(h.half(), h.bfloat16())


row_values = st.one_of(
    st.integers(-3, 3).map(float),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda d: st.tuples(
            st.lists(st.lists(row_values, min_size=d, max_size=d), min_size=1, max_size=3),
            st.lists(st.lists(row_values, min_size=d, max_size=d), min_size=1, max_size=3),
        )
    )
)
def test_kendall_matches_scipy_property(rows):
    left, right = rows
    n = min(len(left), len(right))
    a = torch.tensor(left[:n], dtype=torch.float64)
    b = torch.tensor(right[:n], dtype=torch.float64)
    assert_matches_scipy(a, b)


# ---------------------------------------------------------------- kendall_tau: properties and edge cases


def test_kendall_symmetric_and_extremes():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(5, 200, generator=g, dtype=torch.float64)
    b = torch.randint(0, 4, (5, 200), generator=g).double()
    torch.testing.assert_close(kendall_tau(a, b), kendall_tau(b, a), rtol=0, atol=1e-12)
    torch.testing.assert_close(kendall_tau(a, a), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(kendall_tau(b, b), torch.ones(5, dtype=torch.float64))
    torch.testing.assert_close(kendall_tau(a, -a), -torch.ones(5, dtype=torch.float64))


def test_kendall_constant_map_gives_nan_like_scipy():
    g = torch.Generator().manual_seed(2)
    a = torch.rand(3, 30, generator=g)
    b = torch.rand(3, 30, generator=g)
    a[0] = 0.25
    b[2] = 0.0
    out = kendall_tau(a, b)
    assert torch.isnan(out[0]) and torch.isnan(out[2])
    assert torch.isfinite(out[1])
    assert_matches_scipy(a, b)
    assert torch.isnan(kendall_tau(torch.rand(2, 1), torch.rand(2, 1))).all()  # D == 1


def test_kendall_on_attributions_uses_saliency_map():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 3, 6, 6, generator=g)
    b = a + 0.3 * torch.randn(3, 3, 6, 6, generator=g)
    torch.testing.assert_close(kendall_tau(a, b), kendall_tau(saliency_map(a), saliency_map(b)))
    assert_matches_scipy(saliency_map(a), saliency_map(b))


def test_kendall_dtype_device_and_inputs_untouched():
    g = torch.Generator().manual_seed(6)
    a = torch.rand(3, 40, generator=g)
    b = torch.rand(3, 40, generator=g)
    a0, b0 = a.clone(), b.clone()
    out = kendall_tau(a, b)
    assert out.shape == (3,) and out.dtype == torch.float32 and out.device == a.device
    assert kendall_tau(a.double(), b.double()).dtype == torch.float64
    assert kendall_tau(a.half(), b.half()).dtype == torch.float32
    assert torch.equal(a, a0) and torch.equal(b, b0)


def test_kendall_result_does_not_depend_on_chunking(monkeypatch):
    g = torch.Generator().manual_seed(8)
    a = torch.randint(0, 5, (7, 33), generator=g).float()
    b = torch.rand(7, 33, generator=g)
    whole = kendall_tau(a, b)
    monkeypatch.setitem(_ranking._KENDALL_CHUNK_ELEMENTS, "cpu", 70)  # two rows per chunk
    torch.testing.assert_close(kendall_tau(a, b), whole)
    monkeypatch.setitem(_ranking._KENDALL_CHUNK_ELEMENTS, "cpu", 1)  # one row per chunk
    torch.testing.assert_close(kendall_tau(a, b), whole)


@pytest.mark.parametrize("d", [1, 2, 3, 8, 9, 31, 64, 65])
def test_count_inversions_matches_brute_force(d):
    g = torch.Generator().manual_seed(d)
    perms = torch.stack([torch.randperm(d, generator=g) for _ in range(6)])
    repeats = torch.randint(0, max(1, d // 3), (6, d), generator=g)
    for v in (perms, repeats):
        torch.testing.assert_close(_ranking._count_inversions(v), brute_inversions(v))


def _pair_count_cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(11)
    cont = torch.randn(9, 300, generator=g)
    cases = [
        (cont, 0.5 * cont + torch.randn(9, 300, generator=g)),  # float32
        (cont.double(), torch.randint(0, 4, (9, 300), generator=g).double()),  # float64 against heavy ties
        (torch.randint(-4, 4, (5, 70), generator=g), torch.randint(-2, 2, (5, 70), generator=g).int()),  # int64/32
        (torch.randint(0, 3, (4, 50), generator=g).to(torch.int16), cont[:4, :50].half()),  # widened dtypes
        (torch.zeros(3, 40), torch.rand(3, 40, generator=g)),  # constant rows
        (torch.rand(2, 1, generator=g), torch.rand(2, 1, generator=g)),  # D = 1
        (torch.rand(2, 70_000, generator=g), torch.rand(2, 70_000, generator=g)),  # ranks beyond 16 bits
    ]
    signed = torch.randn(6, 90, generator=g)
    signed[:, ::3] = -0.0
    signed[:, 1::3] = 0.0
    cases.append((signed, -signed.double()))
    return cases


@pytest.mark.parametrize("case", range(8))
def test_compiled_cpu_pair_counts_equal_the_vectorised_ones(case):
    a, b = _pair_count_cases()[case]
    compiled = _ranking.pair_counts(a, b)  # the CPU path
    for x, y in zip(compiled, _ranking._pair_counts_torch(a, b), strict=True):
        assert torch.equal(x, y)


def test_compiled_pair_counts_do_not_depend_on_the_thread_count():
    g = torch.Generator().manual_seed(12)
    a, b = torch.rand(37, 100, generator=g), torch.randint(0, 9, (37, 100), generator=g).float()
    threads = torch.get_num_threads()
    try:
        results = []
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            results.append(torch.stack(_ranking.pair_counts(a, b)))
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(r, results[0]) for r in results)


def test_kendall_rejects_bad_input():
    with pytest.raises(ValueError, match="expected equal shapes"):
        kendall_tau(torch.rand(2, 10), torch.rand(2, 11))
    with pytest.raises(ValueError, match=r"expected maps \(N, D\)"):  # (10,) would be one map
        kendall_tau(torch.rand(()), torch.rand(()))
    bad = torch.rand(2, 10)
    bad[0, 0] = float("inf")
    with pytest.raises(ValueError, match="expected finite values"):
        kendall_tau(torch.rand(2, 10), bad)
    with pytest.raises(ValueError, match="real-valued"):
        kendall_tau(torch.ones(2, 10, dtype=torch.bool), torch.ones(2, 10, dtype=torch.bool))
    with pytest.raises(ValueError, match="non-empty"):
        kendall_tau(torch.rand(2, 0), torch.rand(2, 0))
    with pytest.raises(ValueError, match=r"torch\.Tensor"):  # numpy arrays are accepted, lists are not
        kendall_tau([[0.0] * 3] * 2, torch.rand(2, 3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kendall_and_topk_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(9)
    a = torch.randint(0, 6, (5, 1000), generator=g).float()
    b = torch.rand(5, 1000, generator=g)
    torch.testing.assert_close(kendall_tau(a.cuda(), b.cuda()).cpu(), kendall_tau(a, b))
    torch.testing.assert_close(
        topk_intersection(b.cuda(), a.cuda() + b.cuda(), 50).cpu(), topk_intersection(b, a + b, 50)
    )


# ---------------------------------------------------------------- accuracy


def test_accuracy_values_and_ties():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 3.0], [1.0, 1.0, 0.0], [-1.0, -2.0, -0.5]])
    y = torch.tensor([0, 1, 0, 2])
    out = accuracy(logits, y)
    assert out.dtype == torch.float32 and out.shape == (4,)
    torch.testing.assert_close(out, torch.tensor([1.0, 0.0, 1.0, 1.0]))  # a tie goes to the lower index


def test_accuracy_rejects_bad_input():
    logits = torch.randn(3, 4)
    with pytest.raises(ValueError, match="int64"):
        accuracy(logits, torch.tensor([0, 1, 2], dtype=torch.int32))
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        accuracy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"expected labels in \[0, 4\)"):
        accuracy(logits, torch.tensor([0, 1, 4]))
    with pytest.raises(ValueError, match="expected logits of shape"):
        accuracy(torch.randn(3), torch.tensor([0, 1, 2]))
    bad = logits.clone()
    bad[1, 1] = float("nan")
    with pytest.raises(ValueError, match="expected finite values"):
        accuracy(bad, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="non-empty"):
        accuracy(torch.randn(0, 4), torch.zeros(0, dtype=torch.int64))


# ---------------------------------------------------------------- registry


def test_registry_names_and_lookup():
    assert {"topk_intersection", "kendall_tau", "accuracy"} <= set(METRICS.names())
    assert METRICS.get("kendall_tau") is kendall_tau
    assert METRICS.get("topk_intersection") is topk_intersection
    assert METRICS.get("accuracy") is accuracy
    with pytest.raises(ValueError, match="kendall_tau"):
        METRICS.get("kendal_tau")


def _registry_inputs() -> dict[str, object]:
    """One value for every input name of every metric kind (a tiny model and batch, maps, values, boxes)."""
    g = torch.Generator().manual_seed(10)
    a = torch.randn(4, 1, 8, 8, generator=g)
    model = make_tiny_cnn(num_classes=3)
    x = torch.rand(4, 1, 8, 8, generator=g) * 0.8 + 0.1
    with torch.no_grad():
        y = model(x).argmax(1)
    corner = torch.randint(0, 4, (4, 2), generator=g)
    return {
        "a": a,
        "b": a + 0.1 * torch.randn(4, 1, 8, 8, generator=g),
        "u": torch.randn(4, 12, generator=g),
        "v": torch.randn(4, 12, generator=g),
        "logits": torch.randn(4, 3, generator=g),
        "y": y,
        "model": model,
        "x": x,
        "x_adv": (x + 0.02 * torch.randn(4, 1, 8, 8, generator=g)).clamp(0, 1),
        "pred_boxes": torch.cat([corner, corner + torch.randint(0, 4, (4, 2), generator=g)], 1),
        "gt_boxes": torch.cat([corner, corner + 2], 1),
    }


_STABILITY = {"explain": "saliency", "n_samples": 2, "noise": 0.01}
# Options of every registered metric (inputs come from _registry_inputs by the metric's kind).
METRIC_OPTIONS: dict[str, dict] = {
    "topk_intersection": {"k": 5},
    "kendall_tau": {},
    "spearman": {},
    "cosine": {},
    "pearson": {},
    "ssim": {},
    "gini": {},
    "goodman_kruskal_gamma": {},
    "accuracy": {},
    "corruption_accuracy": {"transforms": {"identity": lambda t: t, "dim": lambda t: 0.5 * t}},
    "ris": _STABILITY,
    "ros": _STABILITY,
    "rrs": {**_STABILITY, "layer": "1"},
    "image_gradient_alignment": {},
    "activation_consistency": {},
    "box_iou": {},
    "gt_known_loc": {},
    "top1_loc": {},
}
UNBOUNDED = {"ris", "ros", "rrs"}  # >= 0 without an upper bound; every other metric lies in [-1, 1]


@pytest.mark.parametrize("name", sorted(METRIC_OPTIONS))
def test_every_registered_metric_is_per_example_and_finite(name):
    options = dict(METRIC_OPTIONS[name])
    if "explain" in options:
        options["generator"] = torch.Generator().manual_seed(0)
    out = call_metric(name, _registry_inputs(), **options)
    for value in out.values() if isinstance(out, dict) else [out]:
        assert isinstance(value, torch.Tensor) and value.shape == (4,)
        assert torch.isfinite(value).all()
        assert (value >= 0).all() if name in UNBOUNDED else ((value >= -1) & (value <= 1)).all()


def test_every_registered_metric_has_test_arguments():
    assert set(METRICS.names()) == set(METRIC_OPTIONS), "add the options of new metrics to METRIC_OPTIONS"
    assert set(METRICS.names()) == set(METRIC_KINDS), "register metrics with register_metric(name, kind)"
    needed = {i for inputs in METRIC_KIND_INPUTS.values() for i in inputs}
    assert needed <= set(_registry_inputs()), "add a test value for every input of a new kind to _registry_inputs"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_compiled_pair_counts_work_in_a_forked_child():
    a, b = torch.rand(40, 50), torch.rand(40, 50)
    expected = kendall_tau(a, b)  # the parent starts its thread pool
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit status
        ok = torch.equal(kendall_tau(a, b), expected)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
