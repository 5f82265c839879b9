"""Oxford Flower-17 (17 category flower dataset, Nilsback and Zisserman 2006).

Layout: ``jpg/image_0001.jpg`` ... ``jpg/image_1360.jpg`` (80 consecutive images per class, classes in the order
of ``FLOWER17_CLASSES``) and ``datasplits.mat`` with three official splits: ``trn1``/``val1``/``tst1`` ...
``trn3``/``val3``/``tst3``, 1-based image numbers (40/20/20 images per class).

Two protocols:

- ``split_set=1, 2 or 3``: the official split; ``"train"`` is ``trn`` plus ``val`` (``include_val=True``) or
  ``trn`` alone, ``"test"`` is ``tst``.
- ``split_set="random"``: the RAR / ART protocol, a seeded random split with ``test_per_class`` test images per
  class (8: 72 training and 8 test images per class); ``datasplits.mat`` is not needed.

Images are resized to a fixed size (128x128 in those papers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attrobust._checks import check_choice, check_int
from attrobust.data.base import ImageDataset
from attrobust.data.images import Decoding, check_size, decode_subset, find_dataset_dir, read_mat

FLOWER17_CLASSES: tuple[str, ...] = (
    "Daffodil",
    "Snowdrop",
    "Lily Valley",
    "Bluebell",
    "Crocus",
    "Iris",
    "Tigerlily",
    "Tulip",
    "Fritillary",
    "Sunflower",
    "Daisy",
    "Colts' Foot",
    "Dandelion",
    "Cowslip",
    "Buttercup",
    "Windflower",
    "Pansy",
)
IMAGES_PER_CLASS = 80
NUM_IMAGES = IMAGES_PER_CLASS * len(FLOWER17_CLASSES)
FLOWER17_LAYOUT = (
    "<data_dir>/flower17/jpg/image_0001.jpg ... image_1360.jpg (17flowers.tgz extracted) and "
    "<data_dir>/flower17/datasplits.mat"
)
_NAME = re.compile(r"image_(\d{4})\.jpg")


def flower17_label(number: int) -> int:
    """Class of image ``number`` (1-based): 80 consecutive images per class."""
    return (number - 1) // IMAGES_PER_CLASS


def flower17_path(root: Path, number: int) -> Path:
    """``root/jpg/image_NNNN.jpg`` for a 1-based image number."""
    return root / "jpg" / f"image_{number:04d}.jpg"


def read_datasplits(path: str | Path, split_set: int) -> dict[str, np.ndarray]:
    """``{"trn": ..., "val": ..., "tst": ...}`` int64 1-based image numbers of split set ``split_set`` (1..3).

    Raises ``ValueError`` naming the file when a variable is missing or holds numbers outside 1..1360.
    """
    names = [f"{part}{split_set}" for part in ("trn", "val", "tst")]
    mat = read_mat(path, names)
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name not in mat:
            raise ValueError(f"{path}: expected variables {', '.join(names)}, {name} is missing")
        values = np.asarray(mat[name], dtype=np.float64).reshape(-1)
        if values.size == 0 or not np.array_equal(values, np.round(values)):
            raise ValueError(f"{path}: expected {name} as a non-empty list of integer image numbers")
        if values.min() < 1 or values.max() > NUM_IMAGES:
            raise ValueError(
                f"{path}: expected {name} image numbers in 1..{NUM_IMAGES}, got [{values.min():g}, {values.max():g}]"
            )
        out[name[:3]] = values.astype(np.int64)
    return out


def random_split(numbers: np.ndarray, split: str, test_per_class: int, seed: int) -> np.ndarray:
    """Seeded per-class split of the image ``numbers`` found: a ``numpy`` permutation of each class (seeded by
    ``seed``) puts its first ``test_per_class`` images in ``"test"``, the others in ``"train"``."""
    rng = np.random.default_rng(seed)
    chosen = []
    labels = np.array([flower17_label(int(n)) for n in numbers])
    for label in range(len(FLOWER17_CLASSES)):
        members = np.sort(numbers[labels == label])
        if members.size == 0:
            continue
        if members.size <= test_per_class:
            raise ValueError(
                f"test_per_class: expected fewer than the {members.size} images of class "
                f"{FLOWER17_CLASSES[label]!r}, got {test_per_class}"
            )
        order = rng.permutation(members.size)
        part = order[:test_per_class] if split == "test" else order[test_per_class:]
        chosen.append(members[part])
    return np.sort(np.concatenate(chosen))


def load_flower17(
    split: str = "train", data_dir: str | Path | None = None, *,
    size: int | Sequence[int] = 128, split_set: int | str = 1, include_val: bool = True, test_per_class: int = 8,
    seed: int = 0, resize_mode: str = "stretch", limit: int | None = None, max_per_class: int | None = None,
    progress: bool | None = None, workers: int | None = None,
) -> ImageDataset:
    """Flower-17 as an :class:`ImageDataset` of 17 classes (see the module docstring for the split protocols).

    Images are float32 ``(N, 3, H, W)`` in [0, 1] resized with antialiasing to ``size`` (an int or ``(H, W)``;
    default 128 as in RAR / ART) by ``resize_mode`` (``"stretch"`` or ``"center_crop"``); labels int64 ``(N,)``
    in 0..16 named by ``FLOWER17_CLASSES``. ``split_set`` is 1, 2, 3 (``datasplits.mat``) or ``"random"``
    (``test_per_class`` test images per class drawn with ``seed``). The dataset directory is ``data_dir``,
    ``data_dir/flower17``, ``.../flowers17`` or ``.../17flowers`` (without ``data_dir``: those subdirectories of
    ``$ATTROBUST_DATA``). ``max_per_class``/``limit`` keep the first examples of each class / overall;
    ``progress`` forces the progress bar on or off (default: on above 1000 files); ``workers`` decoding threads.
    """
    check_choice(split, "split", ("train", "test"))
    if split_set != "random" and (
        isinstance(split_set, bool) or not isinstance(split_set, int) or split_set not in (1, 2, 3)
    ):
        raise ValueError(f"split_set: expected 1, 2, 3 or 'random', got {split_set!r}")
    how = Decoding(check_size(size), resize_mode, limit, max_per_class, progress, workers)
    required = ["jpg"] if split_set == "random" else ["jpg", "datasplits.mat"]
    root = find_dataset_dir(data_dir, ("flower17", "flowers17", "17flowers"), required, "Flower-17", FLOWER17_LAYOUT)
    if split_set == "random":
        check_int(test_per_class, "test_per_class", 1)
        found = sorted(int(m.group(1)) for p in (root / "jpg").iterdir() if (m := _NAME.fullmatch(p.name)))
        found = [n for n in found if 1 <= n <= NUM_IMAGES]
        if not found:
            raise FileNotFoundError(
                f"Flower-17: expected image_0001.jpg ... image_1360.jpg in {root / 'jpg'}, found none"
            )
        numbers = random_split(np.asarray(found, dtype=np.int64), split, test_per_class, seed)
    else:
        parts = read_datasplits(root / "datasplits.mat", int(split_set))
        chosen = [parts["tst"]] if split == "test" else [parts["trn"]] + ([parts["val"]] if include_val else [])
        numbers = np.sort(np.concatenate(chosen))
    labels = np.array([flower17_label(int(n)) for n in numbers], dtype=np.int64)
    paths = [flower17_path(root, int(n)) for n in numbers]
    images, targets, _, _ = decode_subset(paths, labels, how, f"Flower-17 {split}")
    return ImageDataset(images, targets, FLOWER17_CLASSES, "flower17")
