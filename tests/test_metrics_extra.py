"""Tests for the metrics beyond top-k / Kendall: Spearman, Pearson, cosine (scipy / numpy oracles), SSIM
(scikit-image oracle), Goodman-Kruskal gamma (brute force), Gini (closed forms, Quantus), RIS / ROS / RRS (closed
forms on linear models, Quantus), activation consistency (dense layer-by-layer oracle), image-gradient alignment,
localisation boxes (hand-built maps, scipy, raster IoU), corruption accuracy and the metric registry helpers."""

from __future__ import annotations

import functools
import itertools
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage, stats
from skimage.metrics import structural_similarity
from torch import nn

import attrobust.metrics as metrics_pkg
from attrobust import _checks, _ranking
from attrobust._registry import Registry
from attrobust.attacks.corruptions import corrupt
from attrobust.attributions import input_x_gradient, saliency
from attrobust.metrics import (
    METRIC_KINDS,
    activation_consistency,
    box_iou,
    boxes_from_maps,
    call_metric,
    corruption_accuracy,
    cosine,
    gini,
    goodman_kruskal_gamma,
    gt_known_loc,
    image_gradient_alignment,
    kendall_tau,
    localization_heatmap,
    metric_inputs,
    metric_kind,
    metrics_of_kind,
    pearson,
    relative_stability,
    ris,
    ros,
    rrs,
    saliency_map,
    spearman,
    ssim,
    top1_loc,
    uniform_perturbations,
)
from attrobust.metrics.accuracy import accuracy
from attrobust.models import softplus
from conftest import make_tiny_cnn


@pytest.fixture
def fresh_warnings(monkeypatch):
    """Let warn_once warn again inside the test."""
    monkeypatch.setattr(_checks, "_WARNED", set())


def rowwise(fn, a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for x, y in zip(a.double().numpy(), b.double().numpy(), strict=True):
            out.append(fn(x, y))
    return np.asarray(out, dtype=np.float64)


def assert_rows_close(ours: torch.Tensor, ref: np.ndarray, atol: float = 1e-6) -> None:
    ours_np = ours.double().numpy()
    np.testing.assert_array_equal(np.isnan(ours_np), np.isnan(ref))
    np.testing.assert_allclose(ours_np[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=0, atol=atol)


def scipy_spearman(x, y):
    return stats.spearmanr(x, y).statistic


def scipy_pearson(x, y):
    return stats.pearsonr(x, y).statistic if x.size > 1 else np.nan


# ---------------------------------------------------------------- spearman / pearson / cosine


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_spearman_and_pearson_match_scipy_continuous(dtype):
    g = torch.Generator().manual_seed(0)
    a = torch.randn(8, 120, generator=g, dtype=torch.float64)
    b = 0.5 * a + torch.randn(8, 120, generator=g, dtype=torch.float64)
    a, b = a.to(dtype), b.to(dtype)
    atol = 1e-12 if dtype == torch.float64 else 1e-6
    assert_rows_close(spearman(a, b), rowwise(scipy_spearman, a, b), atol)
    assert_rows_close(pearson(a, b), rowwise(scipy_pearson, a, b), atol)
    assert spearman(a, b).dtype == pearson(a, b).dtype == (torch.float64 if dtype == torch.float64 else torch.float32)


@pytest.mark.parametrize("levels", [2, 3, 6])
def test_spearman_average_ranks_for_ties_match_scipy(levels):
    g = torch.Generator().manual_seed(levels)
    a = torch.randint(0, levels, (10, 77), generator=g).float()
    b = torch.randint(-levels, levels, (10, 77), generator=g).float()
    b[:5] = torch.minimum(a[:5], b[:5].abs())
    assert_rows_close(spearman(a, b), rowwise(scipy_spearman, a, b))
    np.testing.assert_allclose(
        metrics_pkg.similarity._average_ranks(a).numpy(), np.stack([stats.rankdata(r) for r in a.numpy()])
    )


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 25).flatmap(
        lambda d: st.lists(
            st.lists(st.integers(-3, 3).map(float) | st.floats(-1e3, 1e3, width=32), min_size=2 * d, max_size=2 * d),
            min_size=1,
            max_size=3,
        )
    )
)
def test_spearman_and_pearson_match_scipy_property(rows):
    t = torch.tensor(rows, dtype=torch.float64)
    a, b = t.chunk(2, dim=1)
    assert_rows_close(spearman(a, b), rowwise(scipy_spearman, a, b), 1e-9)
    assert_rows_close(pearson(a, b), rowwise(scipy_pearson, a, b), 1e-9)


def test_spearman_pearson_constant_rows_give_nan_like_scipy():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 20, generator=g)
    b = torch.rand(3, 20, generator=g)
    a[0] = 0.5
    b[2] = -1.0
    for fn, ref in ((spearman, scipy_spearman), (pearson, scipy_pearson)):
        out = fn(a, b)
        assert torch.isnan(out[0]) and torch.isnan(out[2]) and torch.isfinite(out[1])
        assert_rows_close(out, rowwise(ref, a, b))
    assert torch.isnan(pearson(torch.rand(2, 1), torch.rand(2, 1))).all()


def test_cosine_matches_numpy_and_torch():
    g = torch.Generator().manual_seed(2)
    a = torch.randn(6, 50, generator=g, dtype=torch.float64)
    b = torch.randn(6, 50, generator=g, dtype=torch.float64) + a
    ref = rowwise(lambda x, y: x @ y / np.linalg.norm(x) / np.linalg.norm(y), a, b)
    assert_rows_close(cosine(a, b), ref, 1e-12)
    torch.testing.assert_close(cosine(a, b), torch.nn.functional.cosine_similarity(a, b, dim=1))
    torch.testing.assert_close(cosine(a, -a), -torch.ones(6, dtype=torch.float64))


def test_pearson_is_cosine_of_centred_rows_and_scale_invariant():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(4, 30, generator=g, dtype=torch.float64)
    b = torch.randn(4, 30, generator=g, dtype=torch.float64)
    centred = cosine(a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True))
    torch.testing.assert_close(pearson(a, b), centred)
    torch.testing.assert_close(pearson(3 * a + 2, b), pearson(a, b))
    torch.testing.assert_close(spearman(torch.exp(a), b), spearman(a, b))  # monotone maps keep the ranks


def test_correlations_on_attributions_use_saliency_map():
    g = torch.Generator().manual_seed(4)
    a = torch.randn(3, 3, 5, 5, generator=g)
    b = a + 0.3 * torch.randn(3, 3, 5, 5, generator=g)
    for fn in (spearman, pearson, cosine):
        torch.testing.assert_close(fn(a, b), fn(saliency_map(a), saliency_map(b)))


def test_cosine_zero_row_gives_nan_and_warns(fresh_warnings):
    a = torch.rand(3, 10)
    a[1] = 0
    with pytest.warns(UserWarning, match="all zero"):
        out = cosine(a, torch.rand(3, 10))
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2]]).all()


def test_cosine_and_pearson_are_differentiable():
    g = torch.Generator().manual_seed(5)
    a = torch.randn(3, 12, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 12, generator=g, dtype=torch.float64)
    (ga,) = torch.autograd.grad(cosine(a, b).sum(), a)
    (ref,) = torch.autograd.grad(torch.nn.functional.cosine_similarity(a, b, dim=1).sum(), a)
    torch.testing.assert_close(ga, ref)
    (gp,) = torch.autograd.grad(pearson(a, b).sum(), a)
    assert torch.isfinite(gp).all() and gp.abs().sum() > 0


@pytest.mark.parametrize("fn", [spearman, pearson, cosine])
def test_correlations_reject_bad_input(fn):
    with pytest.raises(ValueError, match="expected equal shapes"):
        fn(torch.rand(2, 5), torch.rand(2, 6))
    with pytest.raises(ValueError, match=r"expected maps \(N, D\)"):  # (5,) would be one map
        fn(torch.rand(()), torch.rand(()))
    bad = torch.rand(2, 5)
    bad[0, 1] = float("nan")
    with pytest.raises(ValueError, match="expected finite values"):
        fn(bad, torch.rand(2, 5))
    with pytest.raises(ValueError, match="non-empty"):
        fn(torch.rand(0, 5), torch.rand(0, 5))


# ---------------------------------------------------------------- SSIM (scikit-image oracle)


SSIM_SETTINGS = [
    {},
    {"win_size": 5},
    {"win_size": 3, "use_sample_covariance": False},
    {"gaussian_weights": True},
    {"gaussian_weights": True, "win_size": 7},  # Gaussian wider than the crop: border mirroring matters
    {"gaussian_weights": True, "sigma": 0.8},
    {"K1": 0.05, "K2": 0.1, "win_size": 9},
]


def sk_ssim(a: torch.Tensor, b: torch.Tensor, data_range, **kw) -> np.ndarray:
    ranges = data_range if isinstance(data_range, list) else [data_range] * a.shape[0]
    channel_axis = 0 if a.dim() == 4 else None
    return np.asarray(
        [
            structural_similarity(x.numpy(), y.numpy(), data_range=r, channel_axis=channel_axis, **kw)
            for x, y, r in zip(a.double(), b.double(), ranges, strict=True)
        ]
    )


@pytest.mark.parametrize("kw", SSIM_SETTINGS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()) or "default")
@pytest.mark.parametrize("channels", [None, 3])
def test_ssim_matches_skimage(kw, channels):
    g = torch.Generator().manual_seed(6)
    shape = (3, 19, 16) if channels is None else (3, channels, 19, 16)
    a = torch.rand(shape, generator=g, dtype=torch.float64)
    b = (a + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    assert_rows_close(ssim(a, b, data_range=1.0, **kw), sk_ssim(a, b, 1.0, **kw), 1e-10)
    a32, b32 = a.float(), b.float()
    out = ssim(a32, b32, data_range=1.0, **kw)
    assert out.dtype == torch.float32
    assert_rows_close(out, sk_ssim(a32, b32, 1.0, **kw), 1e-5)


def test_ssim_default_data_range_is_the_joint_value_range():
    g = torch.Generator().manual_seed(7)
    a = torch.randn(4, 12, 12, generator=g, dtype=torch.float64)
    b = a + 0.5 * torch.randn(4, 12, 12, generator=g, dtype=torch.float64)
    ranges = [float(max(x.max(), y.max()) - min(x.min(), y.min())) for x, y in zip(a, b, strict=True)]
    # Unbounded values: scipy's running-sum filter and conv2d round the local variances differently (~1e-9).
    assert_rows_close(ssim(a, b), sk_ssim(a, b, ranges), 1e-7)
    assert_rows_close(ssim(a, b, data_range=torch.tensor(ranges)), sk_ssim(a, b, ranges), 1e-7)


def test_ssim_identical_maps_give_one_and_saliency_maps_work():
    g = torch.Generator().manual_seed(8)
    a = torch.rand(2, 3, 10, 10, generator=g)
    torch.testing.assert_close(ssim(a, a.clone()), torch.ones(2))
    const = torch.full((2, 9, 9), 0.25)
    torch.testing.assert_close(ssim(const, const.clone()), torch.ones(2))  # zero range: same constant map
    m = saliency_map(a).view(2, 10, 10)
    assert ssim(m, saliency_map(a + 0.1).view(2, 10, 10)).shape == (2,)


def test_ssim_rejects_bad_input():
    a = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="odd integer"):
        ssim(a, a, win_size=4)
    with pytest.raises(ValueError, match="odd integer"):
        ssim(a, a, win_size=9)
    with pytest.raises(ValueError, match=r"expected maps \(N, H, W\)"):  # (H, W) would be one map
        ssim(torch.rand(64), torch.rand(64))
    with pytest.raises(ValueError, match="expected equal shapes"):
        ssim(a, torch.rand(2, 8, 9))
    with pytest.raises(ValueError, match="data_range"):
        ssim(a, a, data_range=-1.0)
    with pytest.raises(ValueError, match="data_range"):
        ssim(a, a, data_range=torch.ones(3))
    with pytest.raises(ValueError, match="win_size"):
        ssim(a, a, win_size=1)
    bad = a.clone()
    bad[0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="finite"):
        ssim(bad, a)


# ---------------------------------------------------------------- Goodman-Kruskal gamma


def brute_gamma(u: np.ndarray, v: np.ndarray) -> float:
    c = d = 0
    for i, j in itertools.combinations(range(len(u)), 2):
        s = np.sign(u[i] - u[j]) * np.sign(v[i] - v[j])
        c += s > 0
        d += s < 0
    return (c - d) / (c + d) if c + d else np.nan


@pytest.mark.parametrize("m", [1, 2, 3, 10, 41])
def test_gamma_matches_brute_force_with_ties(m):
    g = torch.Generator().manual_seed(m)
    cont = torch.randn(5, m, generator=g), torch.randn(5, m, generator=g)
    ties = torch.randint(0, 3, (5, m), generator=g).float(), torch.randint(0, 4, (5, m), generator=g).float()
    for u, v in (cont, ties):
        assert_rows_close(goodman_kruskal_gamma(u, v), rowwise(brute_gamma, u, v), 1e-6)
        assert_rows_close(goodman_kruskal_gamma(u.double(), v.double()), rowwise(brute_gamma, u, v), 1e-12)


def test_gamma_equals_kendall_without_ties_and_extremes():
    g = torch.Generator().manual_seed(9)
    u = torch.randn(4, 60, generator=g, dtype=torch.float64)
    v = u + torch.randn(4, 60, generator=g, dtype=torch.float64)
    torch.testing.assert_close(goodman_kruskal_gamma(u, v), kendall_tau(u, v))
    torch.testing.assert_close(goodman_kruskal_gamma(u, torch.exp(u)), torch.ones(4, dtype=torch.float64))
    torch.testing.assert_close(goodman_kruskal_gamma(u, -u), -torch.ones(4, dtype=torch.float64))
    u_tied = torch.tensor([[0.0, 0.0, 1.0, 2.0]])  # ties dropped: (0,1) tied, every other pair concordant
    torch.testing.assert_close(goodman_kruskal_gamma(u_tied, torch.tensor([[5.0, 1.0, 6.0, 7.0]])), torch.ones(1))
    assert torch.isnan(goodman_kruskal_gamma(torch.ones(1, 5), torch.rand(1, 5))).all()


def test_gamma_does_not_depend_on_chunking(monkeypatch):
    g = torch.Generator().manual_seed(10)
    u = torch.randint(0, 4, (6, 25), generator=g).float()
    v = torch.rand(6, 25, generator=g)
    whole = goodman_kruskal_gamma(u, v)
    monkeypatch.setitem(_ranking._KENDALL_CHUNK_ELEMENTS, "cpu", 30)
    torch.testing.assert_close(goodman_kruskal_gamma(u, v), whole)


def test_gamma_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(N, M\)"):
        goodman_kruskal_gamma(torch.rand(2, 1, 3, 3), torch.rand(2, 1, 3, 3))
    with pytest.raises(ValueError, match="expected equal shapes"):
        goodman_kruskal_gamma(torch.rand(2, 4), torch.rand(2, 5))
    with pytest.raises(ValueError, match="finite"):
        goodman_kruskal_gamma(torch.tensor([[1.0, float("nan")]]), torch.rand(1, 2))


# ---------------------------------------------------------------- Gini


def gini_eq39(v: np.ndarray) -> float:
    """The smoothing paper's eq. 39, written out term by term."""
    s = np.sort(np.abs(v))
    d = s.size
    return 1 - 2 * sum(s[k - 1] / np.abs(v).sum() * (d - k + 0.5) / d for k in range(1, d + 1))


def test_gini_closed_forms():
    d = 50
    torch.testing.assert_close(gini(torch.full((2, d), 0.3)), torch.zeros(2), atol=1e-7, rtol=0)
    one_hot = torch.zeros(3, d)
    one_hot[torch.arange(3), torch.tensor([0, 7, 49])] = torch.tensor([1.0, -4.0, 0.01])
    torch.testing.assert_close(gini(one_hot), torch.full((3,), (d - 1) / d))
    two = torch.zeros(1, 4, dtype=torch.float64)
    two[0, :2] = 1.0  # sorted 0, 0, 1, 1: sum_k (2k - 5) v_k / (4 * 2) = (1 + 3) / 8
    torch.testing.assert_close(gini(two), torch.tensor([0.5], dtype=torch.float64))


def test_gini_matches_eq39_and_is_scale_invariant():
    g = torch.Generator().manual_seed(11)
    a = torch.randn(5, 2, 6, 6, generator=g, dtype=torch.float64) ** 3
    ref = np.asarray([gini_eq39(m) for m in saliency_map(a).numpy()])
    np.testing.assert_allclose(gini(a).numpy(), ref, rtol=0, atol=1e-12)
    flat_ref = np.asarray([gini_eq39(m) for m in a.flatten(1).numpy()])
    np.testing.assert_allclose(gini(a, sum_channels=False).numpy(), flat_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(gini(7.5 * a), gini(a))
    torch.testing.assert_close(gini(saliency_map(a)), gini(a))
    assert gini(a.float()).dtype == torch.float32


def test_gini_zero_row_and_bad_input(fresh_warnings):
    a = torch.rand(2, 10)
    a[0] = 0
    with pytest.warns(UserWarning, match="all zero"):
        out = gini(a)
    assert torch.isnan(out[0]) and torch.isfinite(out[1])
    with pytest.raises(ValueError, match="floating-point"):
        gini(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\(N, D\) or attributions"):  # (3,) would be one map
        gini(torch.rand(()))
    with pytest.raises(ValueError, match="finite"):
        gini(torch.tensor([[1.0, float("inf")]]))


# ---------------------------------------------------------------- stability: RIS / ROS / RRS


def linear_model(d: int = 12, k: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(d, k)).double().eval()
    with torch.no_grad():
        model[1].weight.add_(torch.sign(model[1].weight) * 0.1)  # no zero weight
    return model


def linear_batch(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 3, 4, generator=g, dtype=torch.float64) * 0.6 + 0.2, torch.arange(n) % 3


def test_uniform_perturbations_stay_in_ball_and_box_and_are_seeded():
    x, _ = linear_batch()
    x[0, 0, 0, 0] = 0.0
    s = uniform_perturbations(x, 6, 0.1, generator=torch.Generator().manual_seed(0))
    assert s.shape == (6, *x.shape) and s.dtype == x.dtype
    assert (s - x).abs().max() <= 0.1 + 1e-12 and s.min() >= 0 and s.max() <= 1
    assert (s[:, 0, 0, 0, 0] >= 0).all() and not torch.equal(s[0], s[1])
    torch.testing.assert_close(s, uniform_perturbations(x, 6, 0.1, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="noise"):
        uniform_perturbations(x, 2, 0.0)
    with pytest.raises(ValueError, match="n_samples"):
        uniform_perturbations(x, 0, 0.1)


def test_ris_is_one_for_input_x_gradient_of_a_linear_model():
    # e(x) = x * w_y, so (e(x) - e(x')) / e(x) = (x - x') / x: numerator and denominator agree.
    model = linear_model()
    x, y = linear_batch()
    torch.testing.assert_close(
        ris(model, x, y, input_x_gradient, n_samples=4, noise=0.05, generator=torch.Generator().manual_seed(0)),
        torch.ones(4, dtype=torch.float64),
    )
    # Saliency of a linear model does not change at all.
    out = ris(model, x, y, "saliency", n_samples=3, noise=0.05, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, torch.zeros(4, dtype=torch.float64))


def test_ros_and_rrs_closed_forms_on_a_linear_model():
    model = linear_model()
    x, y = linear_batch()
    samples = uniform_perturbations(x, 5, 0.02, generator=torch.Generator().manual_seed(2))
    w = model[1].weight.detach()
    z = model(x).detach()
    rel_in = ((x - samples) / x).flatten(2).norm(dim=2)  # (S, N)
    dz = torch.stack([model(s).detach() - z for s in samples])  # (S, N, K)
    same = torch.stack([model(s).argmax(1) == z.argmax(1) for s in samples])
    expected_ros = torch.where(same, rel_in / dz.norm(dim=2), -torch.inf).amax(0)
    expected_rel_ros = torch.where(same, rel_in / (dz / z).norm(dim=2), -torch.inf).amax(0)
    assert same.all(0).any()
    torch.testing.assert_close(ros(model, x, y, input_x_gradient, perturbations=samples), expected_ros)
    torch.testing.assert_close(
        ros(model, x, y, input_x_gradient, perturbations=samples, relative=True), expected_rel_ros
    )
    # The representation of the last layer is the logits.
    torch.testing.assert_close(rrs(model, x, y, input_x_gradient, layer="1", perturbations=samples), expected_rel_ros)
    torch.testing.assert_close(
        rrs(model, x, y, input_x_gradient, layer=model[1], relative=False, perturbations=samples), expected_ros
    )
    assert w.abs().min() > 0


def test_stability_seeded_sampling_equals_explicit_perturbations():
    model = softplus(make_tiny_cnn(), 5.0)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(3, 1, 8, 8, generator=g) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2])
    samples = uniform_perturbations(x, 3, 0.02, generator=torch.Generator().manual_seed(4))
    for fn, kw in ((ris, {}), (ros, {}), (rrs, {"layer": "2"})):
        sampled = fn(model, x, y, saliency, n_samples=3, noise=0.02, generator=torch.Generator().manual_seed(4), **kw)
        torch.testing.assert_close(sampled, fn(model, x, y, saliency, perturbations=samples, **kw))
        assert sampled.dtype == torch.float32 and torch.isfinite(sampled).all() and (sampled > 0).all()


def test_stability_drops_neighbours_that_change_the_prediction(fresh_warnings):
    model = linear_model()
    x, y = linear_batch(2)
    z = model(x).detach()
    w = model[1].weight.detach()
    pred = z.argmax(1)
    # Neighbour 0 keeps both predictions; neighbour 1 moves example 0 far towards another class.
    other = (pred[0] + 1) % 3
    push = (w[other] - w[pred[0]]).view(1, 3, 4)
    near = (x + 0.01).clamp(0, 1)
    far = near.clone()
    far[0] = (x[0] + 10 * push).clamp(0, 1)
    assert model(far).argmax(1)[0] != pred[0] and model(far).argmax(1)[1] == pred[1]
    both = ris(model, x, y, input_x_gradient, perturbations=torch.stack([near, far]))
    only_near = ris(model, x, y, input_x_gradient, perturbations=near[None])
    torch.testing.assert_close(both[0], only_near[0])
    with pytest.warns(UserWarning, match="no neighbour with the same prediction"):
        out = ris(model, x, y, input_x_gradient, perturbations=far[None])
    assert torch.isnan(out[0]) and torch.isfinite(out[1])


def test_stability_denominator_floor_eps_min():
    model = linear_model()
    x, y = linear_batch(2)
    calls = []

    def explain(m, xx, yy):  # changes between calls although the input does not
        calls.append(1)
        return torch.full_like(xx, float(len(calls)))

    out = ris(model, x, y, explain, perturbations=x[None].clone(), eps_min=1e-3)
    torch.testing.assert_close(out, torch.full((2,), 12**0.5 / 1e-3, dtype=torch.float64))


def test_stability_rejects_bad_options():
    model = linear_model()
    x, y = linear_batch(2)
    with pytest.raises(ValueError, match="layer"):
        relative_stability(model, x, y, saliency, against="representation")
    with pytest.raises(ValueError, match="layer"):
        ris_layer = functools.partial(relative_stability, against="input", layer="1")
        ris_layer(model, x, y, saliency)
    with pytest.raises(ValueError, match="expected one of"):
        rrs(model, x, y, saliency, layer="nope")
    with pytest.raises(ValueError, match="against"):
        relative_stability(model, x, y, saliency, against="logits")
    with pytest.raises(ValueError, match="unknown attribution"):
        ris(model, x, y, "salency")
    with pytest.raises(ValueError, match="p:"):
        ris(model, x, y, saliency, p=0.5)
    with pytest.raises(ValueError, match="perturbations"):
        ris(model, x, y, saliency, perturbations=x)
    with pytest.raises(ValueError, match="explain"):
        ris(model, x, y, lambda m, xx, yy: xx[:1])
    with pytest.raises(ValueError, match="labels"):
        ris(model, x, torch.tensor([0, 5]), saliency)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ris(model, x + 1, y, saliency)


def quantus_stability(q, metric, model, x, y, samples, **kw):
    """Run a Quantus stability metric with our explainer and the given neighbours (in the same order)."""
    it = iter(samples)

    def perturb(arr, indices, **_):
        return next(it).reshape(arr.shape).numpy()

    def explain(model, inputs, targets, **_):
        return saliency(model, torch.as_tensor(inputs), torch.as_tensor(targets, dtype=torch.int64)).numpy()

    m = metric(nr_samples=samples.shape[0], perturb_func=perturb, disable_warnings=True, **kw)
    return np.asarray(m(model=model, x_batch=x.numpy(), y_batch=y.numpy(), explain_func=explain, device="cpu"))


def test_ris_ros_rrs_match_quantus():
    quantus = pytest.importorskip("quantus", reason="quantus (optional oracle) is not installed")
    model = softplus(make_tiny_cnn(), 5.0)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 1, 8, 8, generator=g) * 0.8 + 0.1
    with torch.no_grad():
        y = model(x).argmax(1)
    samples = uniform_perturbations(x, 3, 0.01, generator=torch.Generator().manual_seed(6))
    cases = (
        (ris, quantus.RelativeInputStability, {}, {}),
        (ros, quantus.RelativeOutputStability, {}, {}),
        (rrs, quantus.RelativeRepresentationStability, {"layer": "3"}, {"layer_names": ["3"]}),
    )
    for ours, metric, kw, qkw in cases:
        ref = quantus_stability(quantus, metric, model, x, y, samples, **qkw)
        out = ours(model, x, y, saliency, perturbations=samples, **kw)
        assert np.isfinite(ref).all() and (ref > 0).all()
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-4)


def test_gini_matches_quantus_sparseness():
    quantus = pytest.importorskip("quantus", reason="quantus (optional oracle) is not installed")
    g = torch.Generator().manual_seed(7)
    a = torch.rand(5, 1, 8, 8, generator=g) ** 4
    a[0, 0, :4] = 0  # zeros: Quantus adds 1e-7 to every value
    x = torch.rand(5, 1, 8, 8, generator=g)
    metric = quantus.Sparseness(abs=True, normalise=False, disable_warnings=True)
    ref = np.asarray(metric(model=None, x_batch=x.numpy(), y_batch=np.zeros(5, dtype=np.int64), a_batch=a.numpy()))
    np.testing.assert_allclose(gini(a).numpy(), ref, rtol=0, atol=2e-5)
    np.testing.assert_allclose(gini(a.double() + 1e-7).numpy(), ref, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- activation consistency / alignment


class TwiceReLU(nn.Module):
    """A net that calls one ReLU module twice (both calls count)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Linear(6, 5)
        self.b = nn.Linear(5, 4)
        self.act = nn.ReLU()
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.b(self.act(self.a(x.flatten(1))))))


def relu_states_dense(model: TwiceReLU, x: torch.Tensor) -> np.ndarray:
    h1 = model.a(x.flatten(1))
    h2 = model.b(torch.relu(h1))
    return torch.cat([h1 > 0, h2 > 0], 1).numpy()


def test_activation_consistency_matches_dense_oracle():
    model = TwiceReLU().eval()
    g = torch.Generator().manual_seed(8)
    x = torch.rand(6, 1, 2, 3, generator=g)
    x_adv = (x + 0.3 * torch.randn(6, 1, 2, 3, generator=g)).clamp(0, 1)
    with torch.no_grad():
        sa, sb = relu_states_dense(model, x), relu_states_dense(model, x_adv)
    p_a, p_b, p_ab = sa.mean(1), sb.mean(1), (sa & sb).mean(1)
    np.testing.assert_allclose(activation_consistency(model, x, x_adv).numpy(), p_ab / np.sqrt(p_a * p_b), atol=1e-6)
    np.testing.assert_allclose(
        activation_consistency(model, x, x_adv, statistic="agreement").numpy(), (sa == sb).mean(1), atol=1e-6
    )
    torch.testing.assert_close(activation_consistency(model, x, x.clone()), torch.ones(6))


def test_activation_consistency_on_cnn_and_bad_input():
    model = make_tiny_cnn()
    x = torch.rand(3, 1, 8, 8)
    out = activation_consistency(model, x, (x + 0.05).clamp(0, 1))
    assert out.shape == (3,) and ((out > 0) & (out <= 1)).all()
    with pytest.raises(ValueError, match=r"nn\.ReLU"):
        activation_consistency(softplus(model, 5.0), x, x)
    with pytest.raises(ValueError, match="statistic"):
        activation_consistency(model, x, x, statistic="jaccard")
    with pytest.raises(ValueError, match="expected equal shapes"):
        activation_consistency(model, x, x[:2])


def test_image_gradient_alignment_closed_form_on_linear_model():
    model = linear_model()
    x, y = linear_batch()
    w = model[1].weight.detach()
    expected = torch.nn.functional.cosine_similarity(x.flatten(1), w[y], dim=1)
    torch.testing.assert_close(image_gradient_alignment(model, x, y), expected)
    x3 = x.repeat(1, 3, 1, 1)
    model3 = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).double().eval()
    g = saliency(model3, x3, y)
    torch.testing.assert_close(
        image_gradient_alignment(model3, x3, y, channel_mean=True),
        torch.nn.functional.cosine_similarity(x3.mean(1).flatten(1), g.mean(1).flatten(1), dim=1),
    )


# ---------------------------------------------------------------- localisation


def test_boxes_from_maps_rectangle():
    maps = torch.zeros(2, 1, 12, 10)
    maps[0, 0, 3:7, 2:6] = 1.0  # rows 3..6, cols 2..5
    maps[1, 0, 0:4, 6:10] = -2.0  # |.|: at the top-right border
    # threshold 0.5: the 3 x 3 mean keeps edge pixels (>= 6/9) and drops outside ones (<= 3/9).
    assert boxes_from_maps(maps, threshold=0.5).tolist() == [[2, 3, 5, 6], [6, 0, 9, 3]]
    # threshold 0.2: the pixels next to an edge (3/9) join; diagonal corners (1/9) do not change the box.
    assert boxes_from_maps(maps, threshold=0.2).tolist() == [[1, 2, 6, 7], [5, 0, 9, 4]]


def test_boxes_from_maps_largest_component_connectivity_and_channels():
    maps = torch.zeros(1, 2, 16, 16)
    maps[0, 0, 1:4, 1:4] = 1.0  # 3 x 3 block
    maps[0, 1, 9:14, 9:13] = -1.0  # 5 x 4 block in the other channel, negative: the largest
    assert boxes_from_maps(maps, threshold=0.5).tolist() == [[9, 9, 12, 13]]
    diag = torch.zeros(1, 20, 20)
    for i in range(0, 18, 3):  # 3 x 3 blocks touching only at corners after thresholding
        diag[0, i : i + 3, i : i + 3] = 1.0
    eight = boxes_from_maps(diag, threshold=0.5, connectivity=8)
    four = boxes_from_maps(diag, threshold=0.5, connectivity=4)
    assert (eight[0, 2] - eight[0, 0]) > (four[0, 2] - four[0, 0])
    assert boxes_from_maps(torch.full((1, 5, 5), 0.3)).tolist() == [[0, 0, 4, 4]]  # nothing: whole image


def test_localization_heatmap_matches_scipy_inside_and_mean_at_border():
    g = torch.Generator().manual_seed(9)
    maps = torch.randn(2, 3, 9, 11, generator=g, dtype=torch.float64)
    heat = localization_heatmap(maps)
    gray = maps.abs().sum(1).numpy()
    lo, hi = gray.min((1, 2), keepdims=True), gray.max((1, 2), keepdims=True)
    norm = (gray - lo) / (hi - lo)
    ref = np.stack([ndimage.uniform_filter(m, size=3) for m in norm])
    np.testing.assert_allclose(heat[:, 1:-1, 1:-1].numpy(), ref[:, 1:-1, 1:-1], atol=1e-12)
    np.testing.assert_allclose(heat[:, 0, 0].numpy(), norm[:, :2, :2].mean((1, 2)), atol=1e-12)
    boxes = boxes_from_maps(maps, threshold=0.4)
    labels = [ndimage.label(h >= 0.4, structure=np.ones((3, 3)))[0] for h in heat.numpy()]
    for box, lab in zip(boxes.tolist(), labels, strict=True):
        biggest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
        rows, cols = np.nonzero(lab == biggest)
        assert box == [cols.min(), rows.min(), cols.max(), rows.max()]


def raster_iou(a, b, size: int = 40) -> float:
    ma, mb = np.zeros((size, size), bool), np.zeros((size, size), bool)
    ma[a[1] : a[3] + 1, a[0] : a[2] + 1] = True
    mb[b[1] : b[3] + 1, b[0] : b[2] + 1] = True
    return (ma & mb).sum() / (ma | mb).sum()


def test_box_iou_matches_raster_oracle():
    g = torch.Generator().manual_seed(10)
    lo = torch.randint(0, 20, (30, 2, 2), generator=g)
    boxes = torch.cat([lo, lo + torch.randint(0, 15, (30, 2, 2), generator=g)], dim=2)  # (30, 2, 4)
    a, b = boxes[:, 0], boxes[:, 1]
    ref = np.asarray([raster_iou(p, q) for p, q in zip(a.tolist(), b.tolist(), strict=True)])
    np.testing.assert_allclose(box_iou(a, b).numpy(), ref, atol=1e-6)
    torch.testing.assert_close(box_iou(a, a), torch.ones(30))
    assert box_iou(a.double(), b).dtype == torch.float64


def test_gt_known_and_top1_loc():
    gt = torch.tensor([[0, 0, 9, 9]] * 4)
    pred = torch.tensor([[0, 0, 9, 9], [0, 0, 9, 4], [0, 0, 9, 3], [20, 20, 25, 25]])  # IoU 1, 0.5, 0.4, 0
    torch.testing.assert_close(gt_known_loc(pred, gt), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    torch.testing.assert_close(gt_known_loc(pred, gt, iou_threshold=0.3), torch.tensor([1.0, 1.0, 1.0, 0.0]))
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [3.0, 0.0]])
    y = torch.tensor([0, 0, 0, 0])
    torch.testing.assert_close(top1_loc(pred, gt, logits, y), torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_localization_rejects_bad_input():
    with pytest.raises(ValueError, match="x1 >= x0"):
        box_iou(torch.tensor([[5, 0, 4, 3]]), torch.tensor([[0, 0, 1, 1]]))
    with pytest.raises(ValueError, match=r"shape \(2, 4\)"):
        box_iou(torch.zeros(2, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match="iou_threshold"):
        gt_known_loc(torch.zeros(1, 4), torch.zeros(1, 4), iou_threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        boxes_from_maps(torch.rand(1, 5, 5), threshold=1.5)
    with pytest.raises(ValueError, match="connectivity"):
        boxes_from_maps(torch.rand(1, 5, 5), connectivity=6)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\) or \(N, H, W\)"):
        boxes_from_maps(torch.rand(5, 5))
    with pytest.raises(ValueError, match="rows"):
        top1_loc(torch.zeros(2, 4), torch.zeros(2, 4), torch.randn(3, 2), torch.tensor([0, 1, 0]))


# ---------------------------------------------------------------- corruption accuracy


def test_corruption_accuracy_matches_accuracy_on_corrupted_copies():
    model = make_tiny_cnn(in_channels=3, size=8)
    g = torch.Generator().manual_seed(11)
    x = torch.rand(6, 3, 8, 8, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    names = ["gaussian_noise", "contrast", "brightness"]
    transforms = {
        n: functools.partial(corrupt, name=n, severity=3, generator=torch.Generator().manual_seed(1)) for n in names
    }
    transforms["identity"] = lambda t: t
    out = corruption_accuracy(model, x, y, transforms)
    assert list(out) == [*names, "identity"]
    with torch.no_grad():
        for n in names:
            ref = accuracy(model(corrupt(x, n, 3, generator=torch.Generator().manual_seed(1))), y)
            torch.testing.assert_close(out[n], ref)
        torch.testing.assert_close(out["identity"], accuracy(model(x), y))


def test_corruption_accuracy_rejects_bad_transforms():
    model = make_tiny_cnn()
    x, y = torch.rand(2, 1, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="non-empty mapping"):
        corruption_accuracy(model, x, y, {})
    with pytest.raises(ValueError, match="callables"):
        corruption_accuracy(model, x, y, {"a": 3})
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corruption_accuracy(model, x, y, {"bright": lambda t: t + 2})
    with pytest.raises(ValueError, match="expected shape"):
        corruption_accuracy(model, x, y, {"crop": lambda t: t[..., :4, :4]})


# ---------------------------------------------------------------- registry helpers


def test_metric_kinds_and_call_metric():
    assert metric_kind("kendall_tau") == "pair" and metric_inputs("kendall_tau") == ("a", "b")
    assert metric_inputs("rrs") == ("model", "x", "y")
    assert {"spearman", "cosine", "ssim", "topk_intersection"} <= set(metrics_of_kind("pair"))
    assert metrics_of_kind("model_pair") == ["activation_consistency"]
    a, b = torch.rand(2, 9), torch.rand(2, 9)
    torch.testing.assert_close(call_metric("spearman", {"a": a, "b": b, "unused": 1}), spearman(a, b))
    torch.testing.assert_close(
        call_metric("topk_intersection", {"a": a, "b": b}, k=3), metrics_pkg.topk_intersection(a, b, 3)
    )
    with pytest.raises(ValueError, match="missing"):
        call_metric("kendall_tau", {"a": a})
    with pytest.raises(ValueError, match="unknown metric"):
        metric_kind("kendal")
    with pytest.raises(ValueError, match="kind"):
        metrics_of_kind("nope")


def test_register_metric_and_new_kind(monkeypatch):
    monkeypatch.setattr(metrics_pkg, "METRICS", Registry("metric"))
    monkeypatch.setattr(metrics_pkg, "METRIC_KINDS", {})
    monkeypatch.setattr(metrics_pkg, "METRIC_KIND_INPUTS", dict(metrics_pkg.METRIC_KIND_INPUTS))
    metrics_pkg.add_metric_kind("attack_pair", ("model", "x", "x_adv", "y"))
    metrics_pkg.register_metric("moved", "attack_pair")(lambda model, x, x_adv, y: (x - x_adv).flatten(1).norm(dim=1))
    x = torch.rand(2, 1, 3, 3)
    out = metrics_pkg.call_metric("moved", {"model": None, "x": x, "x_adv": x + 1, "y": None})
    torch.testing.assert_close(out, torch.full((2,), 3.0))
    assert metrics_pkg.metrics_of_kind("attack_pair") == ["moved"]
    with pytest.raises(ValueError, match="already declared"):
        metrics_pkg.add_metric_kind("pair", ("a", "b"))
    with pytest.raises(ValueError, match="kind"):
        metrics_pkg.register_metric("x", "no_such_kind")
    with pytest.raises(ValueError, match="already registered"):
        metrics_pkg.register_metric("moved", "pair")(lambda a, b: a)
    assert "moved" not in METRIC_KINDS  # the module's table was swapped for the test only


# ---------------------------------------------------------------- CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_metrics_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(12)
    a = torch.randint(0, 5, (4, 3, 12, 12), generator=g).float()
    b = torch.rand(4, 3, 12, 12, generator=g)
    for fn in (spearman, pearson, cosine, ssim):
        torch.testing.assert_close(fn(a.cuda(), b.cuda()).cpu(), fn(a, b))
    torch.testing.assert_close(
        goodman_kruskal_gamma(a.flatten(1).cuda(), b.flatten(1).cuda()).cpu(),
        goodman_kruskal_gamma(a.flatten(1), b.flatten(1)),
    )
    torch.testing.assert_close(gini(b.cuda()).cpu(), gini(b))
    torch.testing.assert_close(boxes_from_maps(b.cuda()).cpu(), boxes_from_maps(b))
    model = softplus(make_tiny_cnn(in_channels=3, size=12), 5.0)
    x = torch.rand(3, 3, 12, 12, generator=g) * 0.8 + 0.1
    y = torch.tensor([0, 1, 2])
    samples = uniform_perturbations(x, 3, 0.01, generator=torch.Generator().manual_seed(0))
    out_cpu = ris(model, x, y, saliency, perturbations=samples)
    out_gpu = ris(model.cuda(), x.cuda(), y.cuda(), saliency, perturbations=samples.cuda())
    torch.testing.assert_close(out_gpu.cpu(), out_cpu, rtol=1e-3, atol=0)
    x_adv = (x + 0.05).clamp(0, 1)
    torch.testing.assert_close(
        activation_consistency(make_tiny_cnn(3, size=12).cuda(), x.cuda(), x_adv.cuda()).cpu(),
        activation_consistency(make_tiny_cnn(3, size=12), x, x_adv),
    )
