"""ImageNette (Howard, 2020): ten easily classified ImageNet classes, from the extracted ``imagenette2*`` archive.

Layout: ``imagenette2-320/train/<wnid>/*.JPEG`` (9469 images) and ``imagenette2-320/val/<wnid>/*.JPEG`` (3925
images; the ``"test"`` split), one folder per WordNet id of ``IMAGENETTE_WNIDS``; the ``-160`` and full-size
archives have the same layout. Labels follow the sorted WordNet ids, as in the archive's usual folder order.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from attrobust._checks import check_choice
from attrobust.data.base import ImageDataset
from attrobust.data.images import Decoding, check_size, decode_subset, find_dataset_dir

IMAGENETTE_WNIDS: tuple[str, ...] = (
    "n01440764",
    "n02102040",
    "n02979186",
    "n03000684",
    "n03028079",
    "n03394916",
    "n03417042",
    "n03425413",
    "n03445777",
    "n03888605",
)
IMAGENETTE_CLASSES: tuple[str, ...] = (
    "tench",
    "English springer",
    "cassette player",
    "chain saw",
    "church",
    "French horn",
    "garbage truck",
    "gas pump",
    "golf ball",
    "parachute",
)
IMAGENETTE_SUBDIRS = ("imagenette2-320", "imagenette2", "imagenette2-160", "imagenette*")
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
IMAGENETTE_LAYOUT = "<data_dir>/imagenette2-320/{train,val}/<wnid>/*.JPEG (imagenette2-320.tgz extracted)"


def imagenette_index(split_dir: Path) -> tuple[list[Path], np.ndarray]:
    """Image paths (sorted within each class) and int64 labels (index of the folder's WordNet id in
    ``IMAGENETTE_WNIDS``) under ``split_dir``.

    Raises ``ValueError`` for a folder that is not an ImageNette WordNet id and ``FileNotFoundError`` when no
    image is found.
    """
    paths: list[Path] = []
    labels: list[int] = []
    for folder in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        if folder.name not in IMAGENETTE_WNIDS:
            raise ValueError(
                f"{folder}: expected class folders named by the ImageNette WordNet ids "
                f"({', '.join(IMAGENETTE_WNIDS)}), got {folder.name!r}"
            )
        files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        paths.extend(files)
        labels.extend([IMAGENETTE_WNIDS.index(folder.name)] * len(files))
    if not paths:
        raise FileNotFoundError(f"ImageNette: expected <wnid>/*.JPEG images in {split_dir}, found none")
    return paths, np.asarray(labels, dtype=np.int64)


def load_imagenette(
    split: str = "train", data_dir: str | Path | None = None, *,
    size: int | Sequence[int] = 224, resize_mode: str = "center_crop", limit: int | None = None,
    max_per_class: int | None = None, progress: bool | None = None, workers: int | None = None,
) -> ImageDataset:
    """ImageNette as an :class:`ImageDataset`: the ``train`` folder (``"train"``) or the ``val`` folder
    (``"test"``), 10 classes named by ``IMAGENETTE_CLASSES``.

    Images are float32 ``(N, 3, H, W)`` in [0, 1], resized with antialiasing to ``size`` (an int or ``(H, W)``;
    default 224) by ``resize_mode``: ``"center_crop"`` (default: the largest centred region of the target
    aspect ratio, so nothing is distorted) or ``"stretch"``. Labels int64 ``(N,)`` in 0..9. The archive
    directory is ``data_dir`` itself or ``data_dir/imagenette2-320``, ``imagenette2``, ``imagenette2-160``, then
    any other ``data_dir/imagenette*`` (without ``data_dir``: those subdirectories of ``$ATTROBUST_DATA``).
    The whole training split at 224x224 takes about 5.7 GB as float32: use ``size=160`` or ``limit`` /
    ``max_per_class`` (first examples, before decoding) for quick runs. ``progress`` forces the progress bar on
    or off (default: on above 1000 files); ``workers`` decoding threads.
    """
    check_choice(split, "split", ("train", "test"))
    how = Decoding(check_size(size), resize_mode, limit, max_per_class, progress, workers)
    folder = "train" if split == "train" else "val"
    root = find_dataset_dir(data_dir, IMAGENETTE_SUBDIRS, [folder], "ImageNette", IMAGENETTE_LAYOUT)
    paths, labels = imagenette_index(root / folder)
    images, targets, _, _ = decode_subset(paths, labels, how, f"ImageNette {split}")
    return ImageDataset(images, targets, IMAGENETTE_CLASSES, "imagenette")
