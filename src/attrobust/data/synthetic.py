"""A seeded, learnable synthetic image dataset of any shape, for tests and quick demos.

Each class owns a fixed random low-frequency template (a coarse ``grid x grid`` random image per channel,
bilinearly upsampled); an example is ``clip(template[label] + noise * N(0, 1), 0, 1)``. Templates depend on
``seed`` only, the examples on ``seed`` and the split, so train and test share the classes but not the samples and
a tiny model (even logistic regression) separates the classes in a few steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from attrobust._checks import check_choice, check_int, check_positive
from attrobust.data.base import ImageDataset

_STREAMS = {"templates": 0, "train": 1, "test": 2}
DEFAULT_SIZES = {"train": 1024, "test": 256}


def _generator(seed: int, stream: str) -> torch.Generator:
    """Independent generator per (seed, stream), derived with numpy's SeedSequence (no collisions across seeds)."""
    state = np.random.SeedSequence([seed, _STREAMS[stream]]).generate_state(1, dtype=np.uint32)[0]
    return torch.Generator().manual_seed(int(state))


def synthetic_templates(
    num_classes: int = 10, channels: int = 1, size: int | tuple[int, int] = 28, *, grid: int = 4, seed: int = 0
) -> torch.Tensor:
    """Class templates, float32 ``(num_classes, channels, H, W)`` with values in [0.1, 0.9]."""
    check_int(num_classes, "num_classes", 2)
    check_int(channels, "channels", 1)
    check_int(grid, "grid", 1)
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    check_int(h, "size (height)", 1)
    check_int(w, "size (width)", 1)
    coarse = torch.rand(num_classes, channels, grid, grid, generator=_generator(seed, "templates"))
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    return 0.1 + 0.8 * smooth


def load_synthetic(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    n: int | None = None,
    num_classes: int = 10,
    channels: int = 1,
    size: int | tuple[int, int] = 28,
    noise: float = 0.15,
    grid: int = 4,
    seed: int = 0,
) -> ImageDataset:
    """Synthetic :class:`ImageDataset`: float32 images ``(n, channels, H, W)`` in [0, 1], int64 labels ``(n,)``.

    Args:
        split: ``"train"`` or ``"test"``; the two use different sample seeds and the same templates.
        data_dir: accepted for a uniform loader signature and ignored (nothing is read from disk).
        n: number of examples (default 1024 for train, 256 for test); labels are balanced (counts differ by at
            most one) and shuffled.
        num_classes, channels, size: number of classes and image shape (``size`` is an int or ``(H, W)``).
        noise: standard deviation of the Gaussian pixel noise added to the template (>= 0).
        grid: resolution of the random coarse pattern upsampled into each template (lower = smoother).
        seed: the same arguments always give identical tensors.
    """
    check_choice(split, "split", ("train", "test"))
    n = DEFAULT_SIZES[split] if n is None else check_int(n, "n", 1)
    check_positive(noise, "noise", allow_zero=True)
    templates = synthetic_templates(num_classes, channels, size, grid=grid, seed=seed)
    gen = _generator(seed, split)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    eps = torch.randn((n, *templates.shape[1:]), generator=gen)
    images = (templates[labels] + noise * eps).clamp_(0.0, 1.0)
    classes = tuple(f"class_{k}" for k in range(num_classes))
    return ImageDataset(images, labels, classes, "synthetic")
