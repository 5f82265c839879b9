"""ROAD (noisy linear imputation), deletion and insertion curves."""

import numpy as np
import pytest
import scipy.ndimage
import torch
import torch.nn.functional as F
from torch import nn

from attrobust.metrics.faithfulness import (
    NEIGHBOUR_WEIGHTS,
    deletion,
    insertion,
    noisy_linear_impute,
    removal_mask,
    removal_order,
    road,
)
from attrobust.metrics.similarity import saliency_map

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]


class Recorder(nn.Module):
    """A linear classifier that keeps a copy of every batch it sees."""

    def __init__(self, d: int, k: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(d, k)
        self.seen: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.lin(x.flatten(1).to(self.lin.weight.dtype)).to(x.dtype)


def _neighbour_average(img: np.ndarray, i: int, j: int) -> np.ndarray:
    """Weighted mean (weights renormalised at the border) of the 8 neighbours of (i, j) in ``img`` (C, H, W)."""
    _, h, w = img.shape
    total, weight_sum = np.zeros(img.shape[0]), 0.0
    for (di, dj), wt in NEIGHBOUR_WEIGHTS:
        a, b = i + di, j + dj
        if 0 <= a < h and 0 <= b < w:
            total += wt * img[:, a, b]
            weight_sum += wt
    return total / weight_sum


# ---------------------------------------------------------------------------------------------- imputation


def test_imputation_solves_the_linear_system():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 2, 7, 9, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 7, 9, generator=g) < 0.5
    out = noisy_linear_impute(x, mask, noise=0.0)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert torch.equal(out[~mask[:, None].expand_as(x)], x[~mask[:, None].expand_as(x)])  # known pixels fixed
    arr = out.numpy()
    for n in range(2):
        for i, j in zip(*np.nonzero(mask[n].numpy()), strict=True):
            # every imputed value is the weighted mean of its neighbours' final (known or imputed) values
            np.testing.assert_allclose(arr[n, :, i, j], _neighbour_average(arr[n], i, j), rtol=0, atol=1e-12)


def test_isolated_removed_pixel_is_the_weighted_neighbour_average():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 3, 5, 5, generator=g, dtype=torch.float64)
    c = x[0].numpy()
    interior = (c[:, 1, 2] + c[:, 3, 2] + c[:, 2, 1] + c[:, 2, 3]) / 6 + (
        c[:, 1, 1] + c[:, 1, 3] + c[:, 3, 1] + c[:, 3, 3]
    ) / 12  # direct neighbours 1/6, diagonal ones 1/12: the weights sum to 1
    corner = (c[:, 0, 1] / 6 + c[:, 1, 0] / 6 + c[:, 1, 1] / 12) / (5 / 12)  # weights renormalised at the border
    edge = (c[:, 0, 2] / 6 + c[:, 0, 4] / 6 + c[:, 1, 3] / 6 + c[:, 1, 2] / 12 + c[:, 1, 4] / 12) / (8 / 12)
    for (i, j), expected in [((2, 2), interior), ((0, 0), corner), ((0, 3), edge)]:
        mask = torch.zeros(1, 5, 5, dtype=torch.bool)
        mask[0, i, j] = True
        out = noisy_linear_impute(x, mask, noise=0.0)
        np.testing.assert_allclose(out[0, :, i, j].numpy(), expected, rtol=0, atol=1e-14)


def test_imputation_matches_quantus():
    perturb = pytest.importorskip("quantus.functions.perturb_func")
    g = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 9, 7, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 9, 7, generator=g) < 0.6
    out = noisy_linear_impute(x, mask, noise=0.0)
    for n in range(2):
        idx = np.flatnonzero(mask[n].numpy().ravel())
        ref = perturb.noisy_linear_imputation(x[n].numpy(), idx, noise=0.0)
        np.testing.assert_allclose(out[n].numpy(), ref, rtol=0, atol=1e-12)


def test_imputation_noise_is_gaussian_and_seeded():
    x = torch.full((1, 1, 40, 40), 0.5, dtype=torch.float64)
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[0, ::2] = True  # every other row: 800 imputed pixels, noiseless value exactly 0.5
    out = noisy_linear_impute(x, mask, noise=0.05, generator=torch.Generator().manual_seed(0))
    residual = (out - 0.5)[0, 0][mask[0]]
    assert residual.numel() == 800
    assert abs(float(residual.mean())) < 0.01
    assert 0.045 < float(residual.std()) < 0.055
    assert torch.equal(out[0, 0][~mask[0]], x[0, 0][~mask[0]])
    again = noisy_linear_impute(x, mask, noise=0.05, generator=torch.Generator().manual_seed(0))
    other = noisy_linear_impute(x, mask, noise=0.05, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and not torch.equal(out, other)


def test_imputation_bad_input():
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match="at least one known pixel"):
        noisy_linear_impute(x, torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask: expected a bool tensor of shape"):
        noisy_linear_impute(x, torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match="mask: expected a bool tensor of shape"):
        noisy_linear_impute(x, torch.zeros(2, 4, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="noise"):
        noisy_linear_impute(x, torch.zeros(2, 4, 4, dtype=torch.bool), noise=-1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        noisy_linear_impute(x + 1, torch.zeros(2, 4, 4, dtype=torch.bool))


# ------------------------------------------------------------------------------------------------- ranking


def test_removal_order_and_masks():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(2, 3, 5, 4, generator=g)
    flat = saliency_map(a)
    assert torch.equal(removal_order(a, "morf"), flat.argsort(dim=1, descending=True, stable=True))
    assert torch.equal(removal_order(a, "lerf"), flat.argsort(dim=1, stable=True))
    assert torch.equal(removal_order(flat.view(2, 5, 4), "morf"), removal_order(a, "morf"))
    # ties keep raster order in both directions
    const = torch.ones(1, 3, 3)
    assert removal_order(const, "morf").tolist() == [list(range(9))]
    assert removal_order(const, "lerf").tolist() == [list(range(9))]
    tied = torch.tensor([[[1.0, 2.0, 2.0], [0.0, 2.0, 1.0]]])
    assert removal_order(tied, "morf").tolist() == [[1, 2, 4, 0, 5, 3]]
    assert removal_order(tied, "lerf").tolist() == [[3, 0, 5, 1, 2, 4]]
    # floor(f * D) pixels, robust to float rounding (0.29 * 100 = 28.999...)
    big = torch.rand(3, 10, 10, generator=g)
    for f, k in [(0.0, 0), (0.29, 29), (0.3, 30), (0.555, 55), (1.0, 100)]:
        m = removal_mask(big, f)
        assert m.shape == (3, 10, 10) and m.dtype == torch.bool
        assert m.flatten(1).sum(1).tolist() == [k] * 3
        if 0 < k < 100:  # the removed pixels are the k largest
            assert bool((big[m].view(3, k).min(1).values >= big[~m].view(3, -1).max(1).values).all())
    with pytest.raises(ValueError, match="order"):
        removal_order(big, "random")
    with pytest.raises(ValueError, match="fraction"):
        removal_mask(big, 1.5)


# --------------------------------------------------------------------------------------------------- ROAD


def test_road_fraction_zero_keeps_the_image():
    g = torch.Generator().manual_seed(4)
    x = torch.rand(3, 2, 6, 6, generator=g)
    y = torch.tensor([0, 1, 2])
    model = Recorder(72).eval()
    res = road(model, x, y, torch.rand(3, 6, 6, generator=g), fractions=(0.0, 0.5), generator=g)
    seen_original, seen_zero, seen_half = model.seen
    assert torch.equal(seen_original, x) and torch.equal(seen_zero, x)
    assert torch.equal(res.curve[:, 0], res.original)
    changed = (seen_half != x).any(1)  # removed pixels get new (imputed + noisy) values, the others stay
    assert changed.flatten(1).sum(1).tolist() == [18, 18, 18]


def test_road_outputs_and_auc():
    g = torch.Generator().manual_seed(5)
    x = torch.rand(4, 1, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 1])
    model = Recorder(64).eval()
    maps = torch.randn(4, 1, 8, 8, generator=g)
    fr = (0.2, 0.4, 0.6)
    res = road(model, x, y, maps, fractions=fr, output="probability", generator=torch.Generator().manual_seed(0))
    assert res.curve.shape == (4, 3) and res.auc.shape == (4,) and res.original.shape == (4,)
    probs = F.softmax(model.lin(x.flatten(1)), dim=1).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(res.original, probs.detach())
    for k, img in enumerate(model.seen[1:]):
        ref = F.softmax(model.lin(img.flatten(1)), dim=1).gather(1, y[:, None]).squeeze(1)
        torch.testing.assert_close(res.curve[:, k], ref.detach())
    drops = res.original[:, None] - res.curve
    torch.testing.assert_close(res.auc, drops.sum(1) / (len(fr) + 1))  # paper 003: 1/(L+1) sum_k (f(x0) - f(xk))
    trap = road(model, x, y, maps, fractions=fr, output="probability", auc="trapezoid",
                generator=torch.Generator().manual_seed(0))  # fmt: skip
    torch.testing.assert_close(trap.curve, res.curve)
    ref = np.trapezoid(np.c_[np.zeros(4), drops.numpy()], [0.0, *fr], axis=1) / fr[-1]
    np.testing.assert_allclose(trap.auc.numpy(), ref, rtol=1e-6)
    acc = road(model, x, y, maps, fractions=fr, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(acc.original, (model.lin(x.flatten(1)).argmax(1) == y).float())
    assert set(acc.curve.unique().tolist()) <= {0.0, 1.0}
    const = road(model, x, y, maps, fractions=(0.5, 1.0), imputation="constant", value=0.25)
    last = model.seen[-1]
    assert torch.equal(last, torch.full_like(x, 0.25))  # fraction 1 with a constant fill: every pixel replaced
    assert const.curve.shape == (4, 2)


@pytest.fixture(scope="module")
def region_task():
    """Class = whether a 3x3 patch is brighter or darker than a noisy background; a linear model learns it."""
    g = torch.Generator().manual_seed(0)

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = 0.3 + 0.4 * torch.rand(n, 1, 8, 8, generator=g)
        y = torch.randint(0, 2, (n,), generator=g)
        x[:, :, 2:5, 3:6] += (0.5 - y.float()).view(-1, 1, 1, 1) * -0.5
        return x.clamp(0, 1), y

    x_tr, y_tr = sample(256)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x_tr), y_tr).backward()
        opt.step()
    model.eval()
    x_te, y_te = sample(160)
    truth = torch.zeros(160, 8, 8)
    truth[:, 2:5, 3:6] = 1.0
    return model, x_te, y_te, truth


def test_road_true_map_hurts_more_than_random(region_task):
    model, x, y, truth = region_task
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.95
    g = torch.Generator().manual_seed(1)
    rand_map = torch.rand(truth.shape, generator=g)
    fr = (0.2, 0.4)
    morf = road(model, x, y, truth, fractions=fr, generator=g)
    rand = road(model, x, y, rand_map, fractions=fr, generator=g)
    lerf = road(model, x, y, truth, order="lerf", fractions=fr, generator=g)
    # removing the decisive patch first (and imputing it from the background) destroys the class evidence
    assert float(morf.curve.mean(0)[0]) < 0.7
    assert float(rand.curve.mean(0)[0]) > 0.85
    assert float(morf.auc.mean()) > float(rand.auc.mean()) + 0.1
    assert float(lerf.auc.mean()) < float(morf.auc.mean()) - 0.1
    dele = deletion(model, x, y, truth, fractions=(0.0, 0.2, 0.4), baseline=0.5)
    dele_rand = deletion(model, x, y, rand_map, fractions=(0.0, 0.2, 0.4), baseline=0.5)
    assert float(dele.auc.mean()) < float(dele_rand.auc.mean())  # lower deletion area: more faithful
    ins = insertion(model, x, y, truth, fractions=(0.0, 0.2, 0.4), baseline=0.5)
    ins_rand = insertion(model, x, y, rand_map, fractions=(0.0, 0.2, 0.4), baseline=0.5)
    assert float(ins.auc.mean()) > float(ins_rand.auc.mean())  # higher insertion area: more faithful


# ------------------------------------------------------------------------------------ deletion / insertion


def test_deletion_and_insertion_images():
    g = torch.Generator().manual_seed(6)
    x = torch.rand(2, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.tensor([1, 0])
    maps = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    fr = (0.0, 0.25, 1.0)
    model = Recorder(192).double().eval()
    res = deletion(model, x, y, maps, fractions=fr)
    for f, img in zip(fr, model.seen, strict=False):
        m = removal_mask(maps, f)[:, None].expand_as(x)
        assert torch.equal(img[m], torch.zeros_like(x)[m]) and torch.equal(img[~m], x[~m])
    np.testing.assert_allclose(res.auc.numpy(), np.trapezoid(res.curve.numpy(), fr, axis=1) / 1.0, rtol=1e-12)

    model.seen.clear()
    insertion(model, x, y, maps, fractions=fr, blur_kernel=5, blur_sigma=1.5)
    blurred = scipy.ndimage.gaussian_filter(x.numpy(), sigma=(0, 0, 1.5, 1.5), mode="nearest", truncate=2 / 1.5)
    np.testing.assert_allclose(model.seen[0].numpy(), blurred, atol=1e-6)  # fraction 0: the baseline
    m = removal_mask(maps, 0.25)[:, None].expand_as(x)
    np.testing.assert_allclose(model.seen[1][m].numpy(), x[m].numpy(), atol=0)  # inserted pixels
    np.testing.assert_allclose(model.seen[1][~m].numpy(), blurred[~m.numpy()], atol=1e-6)
    assert torch.equal(model.seen[2], x)  # fraction 1: the image itself
    lerf = insertion(model, x, y, maps, order="lerf", fractions=(0.25,), baseline=torch.zeros(1, 3, 1, 1))
    assert torch.equal(model.seen[-1][removal_mask(maps, 0.25, "lerf")[:, None].expand_as(x)],
                       x[removal_mask(maps, 0.25, "lerf")[:, None].expand_as(x)])  # fmt: skip
    assert lerf.curve.shape == (2, 1)
    torch.testing.assert_close(lerf.auc, lerf.curve[:, 0])


@pytest.mark.parametrize("device", DEVICES)
def test_devices_and_shapes(device):
    g = torch.Generator().manual_seed(7)
    x = torch.rand(3, 1, 6, 6, generator=g).to(device)
    y = torch.tensor([0, 1, 2], device=device)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4)).to(device).eval()
    maps = torch.randn(3, 6, 6, generator=g).to(device)
    for fn in (road, deletion, insertion):
        res = fn(model, x, y, maps, fractions=(0.0, 0.5))
        assert res.curve.shape == (3, 2) and res.auc.shape == (3,) and res.original.shape == (3,)
        assert res.curve.device == x.device and res.auc.device == x.device
    assert noisy_linear_impute(x, removal_mask(maps, 0.5)).device == x.device


def test_bad_input_errors():
    x = torch.rand(2, 1, 5, 5)
    y = torch.tensor([0, 1])
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 3)).eval()
    maps = torch.rand(2, 5, 5)
    cases = [
        (lambda: road(model, x, y, torch.rand(2, 5, 4)), r"maps: expected shape \(2, 5, 5\)"),
        (lambda: road(model, x, y, torch.rand(3, 1, 5, 5)), r"maps: expected shape \(2, C, 5, 5\)"),
        (lambda: road(model, x, y, torch.rand(2, 25)), "maps: expected shape"),
        (lambda: road(model, x, y, maps * float("nan")), "finite"),
        (lambda: road(model, x, y, "map"), "maps: expected a torch.Tensor"),
        (lambda: road(model, x, y, maps, order="best"), "order"),
        (lambda: road(model, x, y, maps, output="logit"), "output"),
        (lambda: road(model, x, y, maps, imputation="blur"), "imputation"),
        (lambda: road(model, x, y, maps, auc="simpson"), "auc"),
        (lambda: road(model, x, y, maps, fractions=(0.5, 1.0)), r"\[0, 1\)"),
        (lambda: road(model, x, y, maps, fractions=(0.5, 0.2)), "increasing"),
        (lambda: road(model, x, y, maps, fractions=()), "non-empty"),
        (lambda: road(model, x, y, maps, noise=-0.1), "noise"),
        (lambda: road(model, x * 2, y, maps), r"\[0, 1\]"),
        (lambda: road(model, x, torch.tensor([0, 3]), maps), "labels in"),
        (lambda: road(model, x, y.int(), maps), "int64"),
        (lambda: road("model", x, y, maps), "nn.Module"),
        (lambda: deletion(model, x, y, maps, fractions=(0.0, 1.5)), r"\[0, 1\]"),
        (lambda: deletion(model, x, y, maps, baseline="noise"), "baseline"),
        (lambda: deletion(model, x, y, maps, baseline=torch.zeros(3, 1, 5, 5)), "broadcastable"),
        (lambda: insertion(model, x, y, maps, blur_kernel=4), "odd"),
        (lambda: insertion(model, x, y, maps, blur_sigma=0.0), "blur_sigma"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
