"""Class balancing by augmentation, as the RAR appendix (C.1.3 GTSRB, C.1.4 Flower) and ART describe it.

The papers apply a "class preserving data augmentation pipeline consisting of rotation, translation, and
projection transforms" to training images until every class holds the same number of examples: 10,000 per class
for GTSRB (430,000 in all) and 1,000 per class for Flower-17 (17,000). They give no strengths for the transforms;
the defaults here (rotation up to 15 degrees, translation up to 10 % of the size, perspective distortion 0.2)
are parameters.
"""

from __future__ import annotations

import math

import kornia.augmentation as K
import torch
from torch import nn

from attrobust._checks import check_int, check_positive, warn_once
from attrobust.data.base import ImageDataset


def augmentation_pipeline(rotation: float = 15.0, translate: float = 0.1, distortion: float = 0.2) -> nn.Module:
    """The rotation -> translation -> projection pipeline (kornia, applied to every image, each with its own
    random parameters): ``RandomRotation(rotation)`` (degrees, uniform in ``[-rotation, rotation]``),
    ``RandomAffine(0, translate=(translate, translate))`` (fraction of width / height) and
    ``RandomPerspective(distortion)`` (corner displacement as a fraction of the size, in [0, 1]).

    Maps float ``(B, C, H, W)`` to ``(B, C, H, W)``; uncovered pixels are 0. Randomness comes from torch's
    global generator (see :func:`balance_by_augmentation` for seeding).
    """
    check_positive(rotation, "rotation", allow_zero=True)
    check_positive(translate, "translate", allow_zero=True)
    check_positive(distortion, "distortion", allow_zero=True)
    if translate > 1:
        raise ValueError(f"translate: expected a fraction in [0, 1], got {translate!r}")
    if distortion > 1:
        raise ValueError(f"distortion: expected a value in [0, 1], got {distortion!r}")
    return nn.Sequential(
        K.RandomRotation(degrees=rotation, p=1.0),
        K.RandomAffine(degrees=0.0, translate=(translate, translate), p=1.0),
        K.RandomPerspective(distortion_scale=distortion, p=1.0),
    )


def balance_by_augmentation(
    ds: ImageDataset,
    *,
    generator: torch.Generator,
    per_class: int | None = None,
    rotation: float = 15.0,
    translate: float = 0.1,
    distortion: float = 0.2,
    batch_size: int = 256,
) -> ImageDataset:
    """A new dataset in which every class holds ``per_class`` examples (default: the largest class count).

    The originals come first, unchanged and in their order; then, class by class, augmented copies of that
    class's images (:func:`augmentation_pipeline`), the sources cycling through a seeded permutation of the
    class so that every original is used equally often (up to one). ``generator`` draws the permutations and a
    seed per batch, with which kornia runs inside :func:`torch.random.fork_rng` (torch's global generator is
    left as it was): the same generator state and ``batch_size`` give the same dataset. Classes already holding
    ``per_class`` examples or more are kept as they are; classes without any example stay empty (warned once).

    Input and output follow the :class:`ImageDataset` contract (float32 ``(N, C, H, W)`` in [0, 1], int64
    labels); the result has the classes and name of ``ds`` and its images on ``ds.images``' device. Boxes of a
    :class:`~attrobust.data.boxed.BoxedImageDataset` are not carried over (the result is a plain dataset).
    """
    if not isinstance(ds, ImageDataset):
        raise ValueError(f"ds: expected an ImageDataset, got {type(ds).__name__}")
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"generator: expected a torch.Generator, got {type(generator).__name__}")
    check_int(batch_size, "batch_size", 1)
    pipeline = augmentation_pipeline(rotation, translate, distortion)
    counts = torch.bincount(ds.labels.cpu(), minlength=ds.num_classes)
    target = int(counts.max()) if per_class is None else check_int(per_class, "per_class", 1)
    empty = [ds.classes[k] for k in range(ds.num_classes) if counts[k] == 0]
    if empty:
        warn_once(f"balance_by_augmentation: classes without examples stay empty: {', '.join(empty)}")
    sources = []
    for k in range(ds.num_classes):
        have = int(counts[k])
        if have == 0 or have >= target:
            continue
        members = torch.nonzero(ds.labels.cpu() == k).flatten()
        order = members[torch.randperm(have, generator=generator)]
        sources.append(order.repeat(math.ceil((target - have) / have))[: target - have])
    if not sources:
        return ImageDataset(ds.images.clone(), ds.labels.clone(), ds.classes, ds.name)
    source = torch.cat(sources)
    new_images = []
    for start in range(0, source.numel(), batch_size):
        batch = ds.images[source[start : start + batch_size].to(ds.images.device)]
        seed = int(torch.randint(0, 2**62, (), generator=generator))
        # kornia draws its parameters on the CPU from torch's default generator: seed a forked copy of it
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            with torch.no_grad():
                new_images.append(pipeline(batch).clamp_(0.0, 1.0))
    images = torch.cat([ds.images, *new_images])
    labels = torch.cat([ds.labels, ds.labels[source.to(ds.labels.device)]])
    return ImageDataset(images, labels, ds.classes, ds.name)
