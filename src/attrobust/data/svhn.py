"""SVHN (cropped digits, "format 2") from the official MATLAB files ``train_32x32.mat`` and ``test_32x32.mat``.

Each file holds ``X``: uint8 ``(32, 32, 3, N)`` (height, width, RGB, example) and ``y``: ``(N, 1)`` labels 1..10,
where 10 stands for the digit 0. ``extra_32x32.mat`` (531131 easier images) may be added to the training split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from attrobust._checks import check_choice
from attrobust.data.base import ImageDataset
from attrobust.data.images import find_dataset_dir, read_mat, select_examples, to_image_tensor

SVHN_FILES: dict[str, str] = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}
SVHN_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
SVHN_LAYOUT = "<data_dir>/svhn/{train_32x32.mat, test_32x32.mat[, extra_32x32.mat]} (cropped digits, format 2)"


def read_svhn_mat(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One ``*_32x32.mat`` file as uint8 images ``(N, 3, 32, 32)`` and int64 digit labels ``(N,)`` in 0..9
    (label 10 becomes 0).

    Raises ``ValueError`` naming the file when it is not a MATLAB v4-v7.2 file with ``X`` uint8
    ``(32, 32, 3, N)`` and ``y`` of N integers in 1..10.
    """
    path = Path(path)
    mat = read_mat(path, ("X", "y"))
    if "X" not in mat or "y" not in mat:
        raise ValueError(f"{path}: expected variables X and y, got {sorted(mat)}")
    x, y = mat["X"], mat["y"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[2] != 3:
        raise ValueError(f"{path}: expected X as uint8 (H, W, 3, N), got {x.dtype} {x.shape}")
    n = x.shape[3]
    y = np.asarray(y).reshape(-1)
    if y.shape != (n,) or not np.all(np.isfinite(y)) or not np.array_equal(y, np.round(y)):
        raise ValueError(f"{path}: expected y as {n} integer labels, got {y.dtype} {np.shape(mat['y'])}")
    labels = y.astype(np.int64)
    if n and (labels.min() < 1 or labels.max() > 10):
        raise ValueError(f"{path}: expected labels in 1..10 (10 = digit 0), got range [{labels.min()}, {labels.max()}]")
    return x.transpose(3, 2, 0, 1), labels % 10


def load_svhn(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    include_extra: bool = False,
    limit: int | None = None,
    max_per_class: int | None = None,
) -> ImageDataset:
    """SVHN as an :class:`ImageDataset`: 73257 (``"train"``) or 26032 (``"test"``) images.

    Images are float32 ``(N, 3, 32, 32)`` with values ``k/255``; labels int64 ``(N,)`` are the digits 0..9 (the
    files' label 10 is digit 0). ``include_extra=True`` appends ``extra_32x32.mat`` to the training split. The
    files are looked up in ``data_dir``, ``data_dir/svhn`` or ``data_dir/SVHN`` (without ``data_dir``: the same
    subdirectories of ``$ATTROBUST_DATA``); a missing file raises ``FileNotFoundError`` naming it.
    ``max_per_class`` keeps the first examples of each class, ``limit`` the first examples overall.
    """
    check_choice(split, "split", ("train", "test"))
    names = [SVHN_FILES[split]] + (["extra_32x32.mat"] if include_extra and split == "train" else [])
    directory = find_dataset_dir(data_dir, ("svhn", "SVHN"), names, "SVHN", SVHN_LAYOUT)
    parts = [read_svhn_mat(directory / name) for name in names]
    codes = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    keep = select_examples(labels, limit, max_per_class)
    images = to_image_tensor(codes if keep.size == codes.shape[0] else codes[keep], channels_last=False)
    return ImageDataset(images, torch.from_numpy(labels[keep]), SVHN_CLASSES, "svhn")
