"""CIFAR-10 from the "python version" directory ``cifar-10-batches-py/`` of the official archive.

The directory holds ``data_batch_1`` ... ``data_batch_5`` (10000 training images each), ``test_batch`` (10000)
and ``batches.meta``. Each batch is a (Python 2) pickle of a dict with bytes keys: ``b"data"`` uint8
``(N, 3072)`` (1024 red, then 1024 green, then 1024 blue values of a 32x32 image, rows top to bottom) and
``b"labels"`` (N ints in 0..9); ``batches.meta`` has ``b"label_names"``. The files are read with the restricted
unpickler of :mod:`attrobust.data._unpickle`, which resolves nothing but numpy's array reconstructors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrobust._checks import check_choice
from attrobust.data._unpickle import restricted_loads
from attrobust.data.base import ImageDataset
from attrobust.data.images import find_dataset_dir, select_examples, to_image_tensor

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_FILES: dict[str, tuple[str, ...]] = {
    "train": tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test": ("test_batch",),
}
CIFAR10_LAYOUT = (
    f"<data_dir>/{CIFAR10_DIR}/{{data_batch_1..data_batch_5, test_batch, batches.meta}} (the python version of "
    "the CIFAR-10 archive, cifar-10-python.tar.gz, extracted)"
)


def read_pickled_dict(path: str | Path) -> dict[str, Any]:
    """Unpickle a CIFAR batch or meta file (restricted) and return its dict with ``str`` keys.

    Raises ``ValueError`` naming the file when it is not a pickled dict (or refers to a forbidden global).
    """
    path = Path(path)
    try:
        obj = restricted_loads(path.read_bytes(), encoding="bytes")
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: expected a CIFAR batch pickle, got an unreadable file ({exc})") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(obj).__name__}")
    return {k.decode("latin-1") if isinstance(k, bytes) else str(k): v for k, v in obj.items()}


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file as uint8 images ``(N, 3, 32, 32)`` and int64 labels ``(N,)`` in 0..9.

    Raises ``ValueError`` naming the file when ``data`` is not uint8 ``(N, 3072)`` or ``labels`` are not N
    integers in 0..9.
    """
    batch = read_pickled_dict(path)
    for key in ("data", "labels"):
        if key not in batch:
            raise ValueError(f"{path}: expected keys b'data' and b'labels', got {sorted(batch)}")
    data = batch["data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise ValueError(f"{path}: expected data as a uint8 array (N, 3072), got {got}")
    labels = np.asarray(batch["labels"])
    if labels.shape != (data.shape[0],) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: expected {data.shape[0]} integer labels, got {labels.dtype} array of shape {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: expected labels in [0, 9], got range [{labels.min()}, {labels.max()}]")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def cifar10_classes(directory: Path) -> tuple[str, ...]:
    """Class names from ``batches.meta`` (``b"label_names"``) when the file exists, else ``CIFAR10_CLASSES``."""
    meta_path = directory / "batches.meta"
    if not meta_path.is_file():
        return CIFAR10_CLASSES
    names = read_pickled_dict(meta_path).get("label_names")
    if not isinstance(names, list) or len(names) != 10:
        raise ValueError(f"{meta_path}: expected label_names as a list of 10 names, got {names!r}")
    return tuple(n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names)


def load_cifar10(
    split: str = "train",
    data_dir: str | Path | None = None,
    *,
    limit: int | None = None,
    max_per_class: int | None = None,
) -> ImageDataset:
    """CIFAR-10 as an :class:`ImageDataset`: 50000 (``"train"``) or 10000 (``"test"``) images.

    Images are float32 ``(N, 3, 32, 32)`` with values ``k/255``; labels int64 ``(N,)`` in 0..9 named from
    ``batches.meta`` (``CIFAR10_CLASSES`` when absent). The directory is ``data_dir`` itself or
    ``data_dir/cifar-10-batches-py`` (without ``data_dir``: ``$ATTROBUST_DATA/cifar-10-batches-py``); a missing
    batch file raises ``FileNotFoundError`` naming it. ``max_per_class`` keeps the first examples of each class,
    ``limit`` the first examples overall.
    """
    check_choice(split, "split", ("train", "test"))
    files = CIFAR10_FILES[split]
    directory = find_dataset_dir(
        data_dir, (CIFAR10_DIR, f"cifar10/{CIFAR10_DIR}", "cifar10"), files, "CIFAR-10", CIFAR10_LAYOUT
    )
    parts = [read_cifar_batch(directory / name) for name in files]
    codes = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    keep = select_examples(labels, limit, max_per_class)
    images = to_image_tensor(codes if keep.size == codes.shape[0] else codes[keep], channels_last=False)
    return ImageDataset(images, torch.from_numpy(labels[keep]), cifar10_classes(directory), "cifar10")
