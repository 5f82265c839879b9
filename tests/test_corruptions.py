"""Common corruptions (Hendrycks & Dietterich 2019): contract, determinism, severity ordering, errors."""

import itertools

import pytest
import torch

from attrobust.attacks.corruptions import CORRUPTIONS, corrupt
from attrobust.data import load

NAMES = CORRUPTIONS.names()
# The reference CIFAR-10-C parameter tables are themselves not ordered by mean absolute change for these four:
# elastic_transform's affine part shrinks with severity (32*[.08, .07, .06, .05, .03] px); pixelate's 4/3 resampling
# grid at severity 4 aliases less than severity 3's; glass_blur's stronger pre/post blur partly undoes its pixel
# swaps; snow's severity 3 zooms the snow layer (fewer, larger flakes). They get weaker ordering checks below.
NOT_ORDERED = {"elastic_transform", "glass_blur", "pixelate", "snow"}


@pytest.fixture(scope="module")
def batches() -> dict[str, torch.Tensor]:
    return {
        "mnist": load("mnist", "test").images[:8],
        "rgb": load("synthetic", "test", n=8, channels=3, size=32, noise=0.02, grid=8, seed=3).images,
    }


def _changes(x: torch.Tensor, name: str) -> list[float]:
    return [float((corrupt(x, name, s, torch.Generator().manual_seed(0)) - x).abs().mean()) for s in range(1, 6)]


def test_registry_has_the_fifteen_corruptions():
    assert set(NAMES) == {
        "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
        "snow", "fog", "brightness", "contrast", "elastic_transform", "pixelate", "jpeg_compression",
        "speckle_noise",
    }  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", ["mnist", "rgb"])
def test_contract_and_seeded_determinism(batches, name, kind):
    x = batches[kind]
    for severity in (1, 3, 5):
        a = corrupt(x, name, severity, torch.Generator().manual_seed(7))
        b = CORRUPTIONS.get(name)(x, severity, generator=torch.Generator().manual_seed(7))
        assert a.shape == x.shape and a.dtype == x.dtype
        assert bool(torch.isfinite(a).all()) and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
        torch.testing.assert_close(a, b, atol=0, rtol=0)
        assert float((a - x).abs().mean()) > 0  # every severity does something on natural images


@pytest.mark.parametrize("name", sorted(set(NAMES) - NOT_ORDERED))
@pytest.mark.parametrize("kind", ["mnist", "rgb"])
def test_change_is_non_decreasing_with_severity(batches, name, kind):
    change = _changes(batches[kind], name)
    assert all(a <= b + 1e-6 for a, b in itertools.pairwise(change)), change


@pytest.mark.parametrize("name", sorted(NOT_ORDERED - {"elastic_transform"}))
@pytest.mark.parametrize("kind", ["mnist", "rgb"])
def test_severity_five_changes_more_than_one(batches, name, kind):
    change = _changes(batches[kind], name)
    assert change[4] > change[0], change


def test_works_on_small_odd_sizes_and_float64():
    x = torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in NAMES:
        out = corrupt(x, name, 5, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == torch.float64 and 0 <= float(out.min()) <= float(out.max()) <= 1


@pytest.mark.parametrize("severity", [0, 6, 2.0, True, "3"])
def test_bad_severity(severity):
    with pytest.raises(ValueError, match=r"severity: expected an integer in 1\.\.5, got"):
        corrupt(torch.rand(1, 1, 8, 8), "fog", severity)


def test_bad_name_and_input():
    with pytest.raises(ValueError, match="unknown corruption 'frost'; expected one of"):
        corrupt(torch.rand(1, 1, 8, 8), "frost", 1)
    with pytest.raises(ValueError, match="expected 1 or 3 channels, got 2"):
        corrupt(torch.rand(1, 2, 8, 8), "fog", 1)
    with pytest.raises(ValueError, match=r"expected pixel values in \[0, 1\], got"):
        corrupt(torch.rand(1, 1, 8, 8) + 1, "fog", 1)
