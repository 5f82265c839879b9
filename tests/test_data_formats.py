"""Tests of the on-disk dataset formats: CIFAR-10, SVHN, GTSRB, Flower-17, ImageNette, CUB-200-2011, the image
helpers, the restricted unpickler and class balancing by augmentation.

Every test writes tiny files in the exact published format into ``tmp_path`` (real pickles, ``.mat`` files from
``scipy.io.savemat``, PPM / JPEG images from Pillow) and reads them back through ``attrobust.data.load``.
Resizing is checked against ``torch.nn.functional.interpolate(..., antialias=True)``.
"""

from __future__ import annotations

import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

from attrobust import data
from attrobust.data import (
    CIFAR10_CLASSES,
    DATASETS,
    FLOWER17_CLASSES,
    GTSRB_CLASSES,
    IMAGENETTE_CLASSES,
    BoxedImageDataset,
    ImageDataset,
    augmentation_pipeline,
    balance_by_augmentation,
    load,
)
from attrobust.data import images as img_lib
from attrobust.data._unpickle import restricted_loads
from attrobust.data.images import decode_images, select_examples, show_progress, source_box

# ---------------------------------------------------------------- helpers


def _pixels(h: int, w: int, seed: int) -> np.ndarray:
    """Random uint8 RGB image (H, W, 3)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path: Path, pixels: np.ndarray, **kw: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None
    Image.fromarray(pixels).save(path, format=fmt, **kw)
    return path


def _solid(h: int, w: int, rgb: tuple[int, int, int]) -> np.ndarray:
    return np.broadcast_to(np.array(rgb, dtype=np.uint8), (h, w, 3)).copy()


def _colour(k: int) -> tuple[int, int, int]:
    """A distinct colour per integer k (used to recognise which file became which example)."""
    return (20 + 37 * k) % 256, (200 - 23 * k) % 256, (60 + 71 * k) % 256


def _mean_colour(img: torch.Tensor) -> np.ndarray:
    return (img.mean((1, 2)) * 255).numpy()


def _aa_resize(pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """Independent oracle: antialiased bilinear resize of uint8 (H, W, 3) to float (3, h, w) in [0, 1]."""
    x = torch.from_numpy(pixels).permute(2, 0, 1)[None].double()
    out = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)[0]
    return (out.round().clamp(0, 255) / 255).float()


def _check_contract(ds: ImageDataset, n: int, shape: tuple[int, int, int], name: str) -> None:
    assert isinstance(ds, ImageDataset) and ds.name == name
    assert ds.images.shape == (n, *shape) and ds.images.dtype == torch.float32 and ds.images.is_contiguous()
    assert ds.labels.shape == (n,) and ds.labels.dtype == torch.int64
    assert float(ds.images.min()) >= 0.0 and float(ds.images.max()) <= 1.0
    scaled = ds.images * 255
    assert torch.allclose(scaled, scaled.round(), atol=1e-3)  # values k/255


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTROBUST_DATA", raising=False)


def test_registry_lists_the_formats() -> None:
    names = DATASETS.names()
    for name in ("cifar10", "svhn", "gtsrb", "flower17", "imagenette", "cub"):
        assert name in names
    assert DATASETS.get("cub") is data.load_cub


@pytest.mark.parametrize("name", ["cifar10", "svhn", "gtsrb", "flower17", "imagenette", "cub"])
def test_no_data_dir_says_where_to_put_files(name: str) -> None:
    with pytest.raises(FileNotFoundError, match="ATTROBUST_DATA") as info:
        load(name, "test")
    assert "Expected layout" in str(info.value) and "Nothing is downloaded" in str(info.value)


@pytest.mark.parametrize("name", ["cifar10", "svhn", "gtsrb", "flower17", "imagenette", "cub"])
def test_invalid_split(name: str) -> None:
    with pytest.raises(ValueError, match="split: expected one of 'train', 'test', got 'valid'"):
        DATASETS.get(name)("valid")


# ---------------------------------------------------------------- restricted unpickler


class _Evil:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple:
        return (os.system, (self.command,))


@pytest.mark.parametrize("protocol", [2, 5])
def test_restricted_unpickler_refuses_os_system(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "executed"
    payload = pickle.dumps({b"data": _Evil(f"touch {marker}")}, protocol=protocol)
    with pytest.raises(pickle.UnpicklingError, match=r"refused global (posix|os|nt)\.system"):
        restricted_loads(payload, encoding="bytes")
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    (batches / "test_batch").write_bytes(payload)
    with pytest.raises(ValueError, match=r"refused global (posix|os|nt)\.system") as info:
        load("cifar10", "test", data_dir=tmp_path)
    assert str(batches / "test_batch") in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"c_codecs\nencode\n(Vabc\nVrot13\ntR.", "refused _codecs.encode"),
        (b"c__builtin__\nbytes\n(I1000\ntR.", r"refused bytes\(1000,\)"),
        (b"cbuiltins\neval\n(V1\ntR.", r"refused global builtins\.eval"),
        (b"cnumpy\nload\n(Vx\ntR.", r"refused global numpy\.load"),
    ],
)
def test_restricted_unpickler_refuses_helpers_misuse(payload: bytes, match: str) -> None:
    with pytest.raises(pickle.UnpicklingError, match=match):
        restricted_loads(payload, encoding="bytes")


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_restricted_unpickler_reads_cifar_structures(protocol: int) -> None:
    obj = {b"data": np.arange(12, dtype=np.uint8).reshape(2, 6), b"labels": [3, 1], b"x": b"", b"y": b"ab"}
    back = restricted_loads(pickle.dumps(obj, protocol=protocol), encoding="bytes")
    assert back[b"labels"] == [3, 1] and back[b"x"] == b"" and back[b"y"] == b"ab"
    assert back[b"data"].dtype == np.uint8 and np.array_equal(back[b"data"], obj[b"data"])


# ---------------------------------------------------------------- CIFAR-10


def _write_cifar(root: Path, per_batch: int = 3, protocol: int = 2, meta: list[bytes] | None = None) -> dict:
    """Write cifar-10-batches-py/ with 5 training batches and a test batch; return the arrays written."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    written = {}
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        x = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, per_batch)]
        batch = {
            b"batch_label": f"batch {i}".encode(),
            b"labels": y,
            b"data": x,
            b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
        }
        (d / name).write_bytes(pickle.dumps(batch, protocol=protocol))
        written[name] = (x, y)
    names = meta if meta is not None else [c.encode() for c in CIFAR10_CLASSES]
    meta_dict = {b"num_cases_per_batch": per_batch, b"label_names": names, b"num_vis": 3072}
    (d / "batches.meta").write_bytes(pickle.dumps(meta_dict, protocol=protocol))
    return written


def test_cifar10_train_and_test(tmp_path: Path) -> None:
    written = _write_cifar(tmp_path)
    train = load("cifar10", "train", data_dir=tmp_path)
    _check_contract(train, 15, (3, 32, 32), "cifar10")
    x = np.concatenate([written[f"data_batch_{k}"][0] for k in range(1, 6)])
    y = [v for k in range(1, 6) for v in written[f"data_batch_{k}"][1]]
    assert train.labels.tolist() == y and train.classes == CIFAR10_CLASSES
    # row layout: 1024 red values, then green, then blue, each row-major 32x32
    assert torch.equal((train.images[4, 0, 2, 7] * 255).round(), torch.tensor(float(x[4, 0 * 1024 + 2 * 32 + 7])))
    assert torch.equal((train.images[9, 2, 31, 0] * 255).round(), torch.tensor(float(x[9, 2 * 1024 + 31 * 32])))
    assert torch.equal((train.images * 255).round().to(torch.uint8), torch.from_numpy(x.reshape(15, 3, 32, 32)))
    test = data.load_cifar10("test", tmp_path / "cifar-10-batches-py")  # the batches directory itself
    assert test.labels.tolist() == written["test_batch"][1] and len(test) == 3


def test_cifar10_channel_planes(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    x = np.zeros((2, 3072), dtype=np.uint8)
    x[0, :1024] = 255  # a pure red image
    x[1, 1024 + 5] = 128  # one green pixel at row 0, column 5
    (d / "test_batch").write_bytes(pickle.dumps({b"data": x, b"labels": [1, 2]}, protocol=2))
    ds = load("cifar10", "test", data_dir=tmp_path)
    assert torch.all(ds.images[0, 0] == 1) and torch.all(ds.images[0, 1:] == 0)
    assert float(ds.images[1, 1, 0, 5]) == pytest.approx(128 / 255) and int((ds.images[1] > 0).sum()) == 1
    assert ds.classes == CIFAR10_CLASSES  # no batches.meta: the standard names


def test_cifar10_meta_names_protocol5_env_and_subsets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"thing{k}".encode() for k in range(10)]
    written = _write_cifar(tmp_path, per_batch=6, protocol=5, meta=names)
    monkeypatch.setenv("ATTROBUST_DATA", str(tmp_path))
    ds = load("cifar10", "test")
    assert ds.classes == tuple(f"thing{k}" for k in range(10))
    y = np.array(written["test_batch"][1])
    assert ds.labels.tolist() == y.tolist()
    sub = load("cifar10", "test", max_per_class=1)
    first = [i for i in range(6) if y[i] not in y[:i]]
    assert sub.labels.tolist() == y[first].tolist()
    assert torch.equal(sub.images, ds.images[first])
    assert load("cifar10", "test", limit=2).labels.tolist() == y[:2].tolist()
    with pytest.raises(ValueError, match="limit: expected an integer >= 1"):
        load("cifar10", "test", limit=0)


def test_cifar10_missing_batch_names_it(tmp_path: Path) -> None:
    _write_cifar(tmp_path)
    batches = tmp_path / "cifar-10-batches-py"
    (batches / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load("cifar10", "train", data_dir=tmp_path)
    message = str(info.value)
    assert f"{batches} lacks data_batch_3" in message and str(tmp_path) in message
    assert "data_batch_1" in message and "cifar-10-batches-py" in message
    assert len(load("cifar10", "test", data_dir=tmp_path)) == 3  # the test split is complete


def test_cifar10_malformed_batches(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(ValueError, match=r"uint8 array \(N, 3072\)"):
        load("cifar10", "test", data_dir=tmp_path)
    (d / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 10]}))
    with pytest.raises(ValueError, match=r"labels in \[0, 9\]"):
        load("cifar10", "test", data_dir=tmp_path)
    (d / "test_batch").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a pickled dict"):
        load("cifar10", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- SVHN


def _write_svhn(directory: Path, name: str, n: int, seed: int, labels: np.ndarray | None = None) -> tuple:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    y = (rng.integers(1, 11, (n, 1)) if labels is None else labels.reshape(n, 1)).astype(np.uint8)
    scipy.io.savemat(directory / name, {"X": x, "y": y})
    return x, y


def test_svhn_layout_and_label_ten_is_zero(tmp_path: Path) -> None:
    x, _ = _write_svhn(tmp_path / "svhn", "train_32x32.mat", 5, 0, np.array([10, 1, 9, 10, 3]))
    ds = load("svhn", "train", data_dir=tmp_path)
    _check_contract(ds, 5, (3, 32, 32), "svhn")
    assert ds.labels.tolist() == [0, 1, 9, 0, 3] and ds.classes == tuple("0123456789")
    # X is (row, column, channel, example)
    assert float(ds.images[2, 1, 7, 30]) * 255 == pytest.approx(float(x[7, 30, 1, 2]), abs=1e-3)
    assert torch.equal((ds.images * 255).round().to(torch.uint8), torch.from_numpy(x.transpose(3, 2, 0, 1).copy()))


def test_svhn_extra_subsets_and_errors(tmp_path: Path) -> None:
    _, y_train = _write_svhn(tmp_path, "train_32x32.mat", 4, 1)
    _, y_extra = _write_svhn(tmp_path, "extra_32x32.mat", 3, 2)
    both = load("svhn", "train", data_dir=tmp_path, include_extra=True)
    assert both.labels.tolist() == (np.concatenate([y_train, y_extra]).ravel() % 10).tolist()
    assert len(load("svhn", "train", data_dir=tmp_path, limit=2)) == 2
    with pytest.raises(FileNotFoundError) as info:
        load("svhn", "test", data_dir=tmp_path)
    assert "test_32x32.mat" in str(info.value) and str(tmp_path / "svhn") in str(info.value)
    _write_svhn(tmp_path / "bad", "test_32x32.mat", 2, 3, np.array([0, 4]))
    with pytest.raises(ValueError, match=r"labels in 1\.\.10"):
        load("svhn", "test", data_dir=tmp_path / "bad")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "test_32x32.mat").write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match="MATLAB"):
        load("svhn", "test", data_dir=tmp_path / "junk")


# ---------------------------------------------------------------- image helpers


def test_antialiased_resize_matches_torch(tmp_path: Path) -> None:
    pixels = _pixels(48, 64, 0)
    path = _save(tmp_path / "a.ppm", pixels)
    for size in [(32, 32), (16, 24), (20, 20)]:
        out, box = decode_images([path], size, workers=1)
        assert out.shape == (1, *size, 3) and box.tolist() == [[0, 0, 64, 48]]
        got = img_lib.to_image_tensor(out)[0]
        assert float((got - _aa_resize(pixels, size)).abs().max()) <= 1.01 / 255
    # a 1-pixel checkerboard shrunk 8x averages to grey (nearest-neighbour would keep 0 or 255)
    board = (((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8)[..., None]).repeat(3, 2)
    grey, _ = decode_images([_save(tmp_path / "b.png", board)], 8)
    assert np.abs(grey.astype(float) - 127.5).max() <= 2


def test_center_crop_and_roi_geometry(tmp_path: Path) -> None:
    pixels = _pixels(48, 64, 1)
    path = _save(tmp_path / "a.ppm", pixels)
    # scale 1: the centre crop of a 48x64 image to 48x48 is exactly columns 8..55
    out, box = decode_images([path], 48, mode="center_crop")
    assert box.tolist() == [[8, 0, 56, 48]] and np.array_equal(out[0], pixels[:, 8:56])
    out, box = decode_images([path], (48, 32), mode="center_crop")  # tall target: crop the sides more
    assert box.tolist() == [[16, 0, 48, 48]] and np.array_equal(out[0], pixels[:, 16:48])
    # a region of interest of the output size is copied exactly
    out, box = decode_images([path], (10, 20), rois=[(5.0, 7.0, 25.0, 17.0)])
    assert box.tolist() == [[5, 7, 25, 17]] and np.array_equal(out[0], pixels[7:17, 5:25])
    assert source_box(64, 48, (24, 24), "stretch", roi=(-3, -2, 100, 30)) == (0.0, 0.0, 64.0, 30.0)
    assert source_box(30, 60, (10, 10), "center_crop") == (0.0, 15.0, 30.0, 45.0)
    with pytest.raises(ValueError, match="resize_mode: expected one of 'stretch', 'center_crop'"):
        decode_images([path], 8, mode="squash")


def test_decode_workers_progress_and_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = [_save(tmp_path / f"{i}.jpg", _pixels(30 + i, 40, i)) for i in range(5)]
    one, _ = decode_images(paths, 12, workers=1)
    many, _ = decode_images(paths, 12, workers=3)
    assert np.array_equal(one, many)
    assert capsys.readouterr().err == ""  # 5 files: no progress bar
    assert show_progress(1001, None) and not show_progress(1000, None) and show_progress(3, True)
    monkeypatch.setattr(img_lib, "PROGRESS_THRESHOLD", 4)
    decode_images(paths, 12, desc="tiny set")
    assert "tiny set" in capsys.readouterr().err
    decode_images(paths, 12, progress=False)
    assert capsys.readouterr().err == ""
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    with pytest.raises(ValueError, match=r"bad\.jpg: expected an image file Pillow can decode"):
        decode_images([tmp_path / "bad.jpg"], 8)
    with pytest.raises(FileNotFoundError, match=r"gone\.jpg"):
        decode_images([tmp_path / "gone.jpg"], 8)
    for bad in (0, (4, 0), "8", (1, 2, 3)):
        with pytest.raises(ValueError, match="size"):
            decode_images(paths, bad)


def test_select_examples() -> None:
    y = [2, 0, 2, 1, 2, 0, 1]
    assert select_examples(y, None, None).tolist() == list(range(7))
    assert select_examples(y, None, 1).tolist() == [0, 1, 3]
    assert select_examples(y, None, 2).tolist() == [0, 1, 2, 3, 5, 6]
    assert select_examples(y, 4, 2).tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="max_per_class"):
        select_examples(y, None, 0)


# ---------------------------------------------------------------- GTSRB


def _gt_csv(path: Path, rows: list[tuple]) -> None:
    lines = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    lines += [";".join(str(v) for v in row) for row in rows]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def _write_gtsrb(root: Path) -> dict[str, list]:
    """Official layout, 3 classes (00000, 00001, 00002) x 2 training images, 4 test images."""
    g = root / "GTSRB"
    train = []
    for cls in range(3):
        folder = g / "Final_Training" / "Images" / f"{cls:05d}"
        rows = []
        for j in range(2):
            h, w = 36 + 2 * j, 40 + cls
            pixels = _pixels(h, w, 10 * cls + j)
            name = f"00000_{j:05d}.ppm"
            _save(folder / name, pixels)
            roi = (3, 4, 3 + 32, 4 + 30)  # a 32-wide, 30-high sign region
            rows.append((name, w, h, *roi, cls))
            train.append((pixels, roi, cls))
        _gt_csv(folder / f"GT-{cls:05d}.csv", rows)
    test, rows = [], []
    for i, cls in enumerate([2, 0, 42, 1]):
        pixels = _pixels(33, 35, 100 + i)
        name = f"{i:05d}.ppm"
        _save(g / "Final_Test" / "Images" / name, pixels)
        rows.append((name, 35, 33, 1, 2, 33, 32, cls))
        test.append((pixels, (1, 2, 33, 32), cls))
    _gt_csv(g / "GT-final_test.csv", rows)
    return {"train": train, "test": test}


def test_gtsrb_train_test_resize_and_roi(tmp_path: Path) -> None:
    written = _write_gtsrb(tmp_path)
    train = load("gtsrb", "train", data_dir=tmp_path)
    _check_contract(train, 6, (3, 32, 32), "gtsrb")
    assert train.labels.tolist() == [0, 0, 1, 1, 2, 2] and train.classes == GTSRB_CLASSES and train.num_classes == 43
    for i, (pixels, _, _) in enumerate(written["train"]):
        assert float((train.images[i] - _aa_resize(pixels, (32, 32))).abs().max()) <= 1.01 / 255
    test = load("gtsrb", "test", data_dir=tmp_path, size=(16, 24))
    _check_contract(test, 4, (3, 16, 24), "gtsrb")
    assert test.labels.tolist() == [2, 0, 42, 1]
    # crop_roi: the 32x30 region of interest, resized to its own size, is copied exactly
    cropped = load("gtsrb", "train", data_dir=tmp_path / "GTSRB", crop_roi=True, size=(30, 32))
    for i, (pixels, (x1, y1, x2, y2), _) in enumerate(written["train"]):
        expected = torch.from_numpy(pixels[y1:y2, x1:x2]).permute(2, 0, 1).float() / 255
        assert torch.equal(cropped.images[i], expected)
    assert load("gtsrb", "train", data_dir=tmp_path, max_per_class=1).labels.tolist() == [0, 1, 2]


def test_gtsrb_missing_and_malformed(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path)
    g = tmp_path / "GTSRB"
    with pytest.raises(FileNotFoundError, match="Final_Test/Images") as info:
        load("gtsrb", "test", data_dir=tmp_path / "elsewhere")
    assert str(tmp_path / "elsewhere" / "GTSRB") in str(info.value)
    (g / "GT-final_test.csv").rename(g / "moved.csv")
    with pytest.raises(FileNotFoundError, match=r"GT-final_test\.csv") as info:
        load("gtsrb", "test", data_dir=tmp_path)
    assert str(g / "Final_Test" / "Images" / "GT-final_test.csv") in str(info.value)
    (g / "moved.csv").rename(g / "Final_Test" / "GT-final_test.csv")  # another accepted place
    assert len(load("gtsrb", "test", data_dir=tmp_path)) == 4
    (g / "Final_Test" / "GT-final_test.csv").rename(tmp_path / "GT-final_test.csv")  # beside GTSRB/ (GT zip)
    assert load("gtsrb", "test", data_dir=tmp_path).labels.tolist() == [2, 0, 42, 1]
    (g / "Final_Training" / "Images" / "00001" / "GT-00001.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"GT-00001\.csv"):
        load("gtsrb", "train", data_dir=tmp_path)
    _gt_csv(g / "Final_Training" / "Images" / "00001" / "GT-00001.csv", [("00000_00000.ppm", 41, 36, 0, 0, 9, 9, 43)])
    with pytest.raises(ValueError, match=r"ClassId in 0\.\.42, got 43"):
        load("gtsrb", "train", data_dir=tmp_path)
    (g / "Final_Training" / "Images" / "00001" / "GT-00001.csv").write_text("a,b,c\n")
    with pytest.raises(ValueError, match="expected header Filename;Width"):
        load("gtsrb", "train", data_dir=tmp_path)


# ---------------------------------------------------------------- Flower-17

_FLOWER_NUMBERS = [1, 2, 3, 81, 82, 83, 161, 162, 163]  # 3 images of each of the first 3 classes


def _write_flowers(root: Path) -> Path:
    d = root / "flower17"
    for n in _FLOWER_NUMBERS:
        _save(d / "jpg" / f"image_{n:04d}.jpg", _solid(30, 40, _colour(n)), quality=95)
    splits = {}
    for s, (a, b, c) in enumerate([(0, 1, 2), (1, 2, 0), (2, 0, 1)], start=1):
        groups = [[1 + a, 81 + a, 161 + a], [1 + b, 81 + b, 161 + b], [1 + c, 81 + c, 161 + c]]
        for part, numbers in zip(("trn", "val", "tst"), groups, strict=True):
            splits[f"{part}{s}"] = np.array([numbers], dtype=np.float64)  # 1 x N doubles, as in datasplits.mat
    scipy.io.savemat(d / "datasplits.mat", splits)
    return d


def _which(ds: ImageDataset) -> list[int]:
    """Image numbers recognised from the solid colours."""
    table = {n: np.array(_colour(n), dtype=float) for n in _FLOWER_NUMBERS}
    out = []
    for img in ds.images:
        colour = _mean_colour(img)
        best = min(table, key=lambda n: float(np.abs(table[n] - colour).sum()))
        assert np.abs(table[best] - colour).max() <= 4
        out.append(best)
    return out


def test_flower17_official_splits(tmp_path: Path) -> None:
    _write_flowers(tmp_path)
    train = load("flower17", "train", data_dir=tmp_path, size=16)
    _check_contract(train, 6, (3, 16, 16), "flower17")
    assert _which(train) == [1, 2, 81, 82, 161, 162] and train.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert train.classes == FLOWER17_CLASSES and train.num_classes == 17
    only_trn = load("flower17", "train", data_dir=tmp_path, size=16, include_val=False)
    assert _which(only_trn) == [1, 81, 161]
    test2 = load("flower17", "test", data_dir=tmp_path, size=(8, 12), split_set=2)
    assert test2.images.shape == (3, 3, 8, 12) and _which(test2) == [1, 81, 161]
    assert _which(load("flower17", "test", data_dir=tmp_path, size=16, split_set=3)) == [2, 82, 162]
    assert len(load("flower17", "train", data_dir=tmp_path, size=16)) == 6  # default size is 128
    assert load("flower17", "test", data_dir=tmp_path).images.shape[1:] == (3, 128, 128)
    for bad in (0, 4, "1", True):
        with pytest.raises(ValueError, match="split_set: expected 1, 2, 3 or 'random'"):
            load("flower17", "test", data_dir=tmp_path, split_set=bad)


def test_flower17_random_split(tmp_path: Path) -> None:
    d = _write_flowers(tmp_path)
    (d / "datasplits.mat").unlink()  # not needed for the random protocol
    kw = {"data_dir": tmp_path, "size": 8, "split_set": "random", "test_per_class": 1}
    splits = {s: _which(load("flower17", s, seed=5, **kw)) for s in ("train", "test")}
    assert len(splits["test"]) == 3 and len(splits["train"]) == 6
    assert sorted(splits["test"] + splits["train"]) == _FLOWER_NUMBERS
    assert sorted((n - 1) // 80 for n in splits["test"]) == [0, 1, 2]  # one test image per class
    assert _which(load("flower17", "test", seed=5, **kw)) == splits["test"]
    draws = {tuple(_which(load("flower17", "test", seed=s, **kw))) for s in range(6)}
    assert len(draws) > 1
    with pytest.raises(ValueError, match="test_per_class: expected fewer than the 3 images"):
        load("flower17", "test", data_dir=tmp_path, split_set="random", test_per_class=3)
    with pytest.raises(FileNotFoundError) as info:
        load("flower17", "test", data_dir=tmp_path)  # split_set=1 needs datasplits.mat
    assert f"{d} lacks datasplits.mat" in str(info.value)


def test_flower17_missing_image(tmp_path: Path) -> None:
    d = _write_flowers(tmp_path)
    (d / "jpg" / "image_0082.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"image_0082\.jpg"):
        load("flower17", "train", data_dir=tmp_path, size=8)


# ---------------------------------------------------------------- ImageNette


def _write_imagenette(root: Path) -> Path:
    d = root / "imagenette2-160"
    layout = {"train": {"n01440764": 2, "n03888605": 2, "n03000684": 1}, "val": {"n01440764": 1, "n02102040": 1}}
    k = 0
    for folder, classes in layout.items():
        for wnid, count in classes.items():
            for j in range(count):
                _save(d / folder / wnid / f"{wnid}_{j}.JPEG", _solid(40, 60, _colour(k)), quality=95)
                k += 1
    return d


def test_imagenette_folders_and_names(tmp_path: Path) -> None:
    _write_imagenette(tmp_path)
    train = load("imagenette", "train", data_dir=tmp_path, size=16)
    _check_contract(train, 5, (3, 16, 16), "imagenette")
    assert train.labels.tolist() == [0, 0, 3, 9, 9]  # sorted wnids: tench, chain saw, parachute
    assert train.classes == IMAGENETTE_CLASSES and train.classes[0] == "tench" and train.classes[9] == "parachute"
    assert np.abs(_mean_colour(train.images[2]) - np.array(_colour(4))).max() <= 4  # n03000684_0 was written 5th
    test = load("imagenette", "test", data_dir=tmp_path, size=(12, 20), resize_mode="stretch")
    assert test.images.shape == (2, 3, 12, 20) and test.labels.tolist() == [0, 1]
    assert load("imagenette", "train", data_dir=tmp_path, size=8, max_per_class=1).labels.tolist() == [0, 3, 9]
    assert load("imagenette", "train", data_dir=tmp_path).images.shape[1:] == (3, 224, 224)


def test_imagenette_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    d = tmp_path / "imagenette2-320" / "val" / "n03445777"
    pixels = _solid(40, 80, (0, 200, 0))
    pixels[:, :20] = (255, 0, 0)  # left and right quarters red: cut off by the centre crop
    pixels[:, 60:] = (255, 0, 0)
    _save(d / "x.png", pixels)
    ds = load("imagenette", "test", data_dir=tmp_path, size=40)  # scale 1: exactly columns 20..59
    assert torch.all(ds.images[0, 0] == 0) and torch.all(ds.images[0, 1] == 200 / 255)
    assert ds.labels.tolist() == [8]  # golf ball
    stretched = load("imagenette", "test", data_dir=tmp_path, size=40, resize_mode="stretch")
    assert torch.all(stretched.images[0, 0, :, 0] == 1.0)  # stretched: the red border stays


def test_imagenette_errors(tmp_path: Path) -> None:
    d = _write_imagenette(tmp_path)
    shutil.rmtree(d / "val")
    with pytest.raises(FileNotFoundError) as info:
        load("imagenette", "test", data_dir=tmp_path)
    assert "expected val in one of" in str(info.value) and str(d) in str(info.value)
    (d / "train" / "n99999999").mkdir()
    with pytest.raises(ValueError, match="n99999999"):
        load("imagenette", "train", data_dir=tmp_path)


# ---------------------------------------------------------------- CUB-200-2011

_CUB_IMAGES = [  # (id, class id, folder, is_train, (h, w), box x, y, width, height)
    (1, 1, "001.Black_footed_Albatross", 1, (40, 60), (10.0, 5.0, 30.0, 20.0)),
    (2, 1, "001.Black_footed_Albatross", 0, (50, 50), (0.0, 0.0, 50.0, 50.0)),
    (3, 2, "002.Laysan_Albatross", 1, (40, 80), (2.0, 4.0, 70.0, 30.0)),
    (4, 3, "003.Sooty_Albatross", 1, (60, 30), (5.0, 12.5, 10.0, 20.0)),
    (5, 3, "003.Sooty_Albatross", 0, (30, 40), (4.0, 6.0, 8.0, 10.0)),
]


def _write_cub(root: Path) -> Path:
    d = root / "CUB_200_2011"
    d.mkdir(parents=True)
    folders = sorted({(c, f) for _, c, f, *_ in _CUB_IMAGES})
    (d / "classes.txt").write_text("".join(f"{c} {f}\n" for c, f in folders))
    lines: dict[str, list[str]] = {"images": [], "labels": [], "split": [], "boxes": []}
    for image_id, cls, folder, train, (h, w), (x, y, bw, bh) in _CUB_IMAGES:
        rel = f"{folder}/{folder.split('.')[1]}_{image_id:04d}.jpg"
        _save(d / "images" / rel, _solid(h, w, _colour(image_id)), quality=95)
        lines["images"].append(f"{image_id} {rel}")
        lines["labels"].append(f"{image_id} {cls}")
        lines["split"].append(f"{image_id} {train}")
        lines["boxes"].append(f"{image_id} {x} {y} {bw} {bh}")
    for key, name in [
        ("images", "images.txt"),
        ("labels", "image_class_labels.txt"),
        ("split", "train_test_split.txt"),
        ("boxes", "bounding_boxes.txt"),
    ]:
        (d / name).write_text("\n".join(lines[key]) + "\n")
    return d


def test_cub_split_labels_names_and_stretched_boxes(tmp_path: Path) -> None:
    _write_cub(tmp_path)
    train = load("cub", "train", data_dir=tmp_path, size=16)
    assert isinstance(train, BoxedImageDataset)
    _check_contract(train, 3, (3, 16, 16), "cub")
    assert train.labels.tolist() == [0, 1, 2]
    assert train.classes == ("Black footed Albatross", "Laysan Albatross", "Sooty Albatross")
    for i, image_id in enumerate([1, 3, 4]):
        assert np.abs(_mean_colour(train.images[i]) - np.array(_colour(image_id))).max() <= 4
    # stretch: x scales by 16 / width, y by 16 / height
    expected = []
    for _, _, _, is_train, (h, w), (x, y, bw, bh) in _CUB_IMAGES:
        if is_train:
            expected.append([x * 16 / w, y * 16 / h, (x + bw) * 16 / w, (y + bh) * 16 / h])
    assert train.boxes.dtype == torch.float32 and train.boxes.shape == (3, 4)
    assert torch.allclose(train.boxes, torch.tensor(expected), atol=1e-5)
    test = load("cub", "test", data_dir=tmp_path, size=(10, 20))
    assert test.labels.tolist() == [0, 2] and test.images.shape == (2, 3, 10, 20)
    assert torch.allclose(test.boxes[0], torch.tensor([0.0, 0.0, 20.0, 10.0]))
    assert torch.allclose(test.boxes[1], torch.tensor([4 * 20 / 40, 6 * 10 / 30, 12 * 20 / 40, 16 * 10 / 30]))


def test_cub_center_crop_boxes_are_shifted_and_clipped(tmp_path: Path) -> None:
    _write_cub(tmp_path)
    ds = load("cub", "train", data_dir=tmp_path, size=20, resize_mode="center_crop")
    # image 1: 60x40 -> crop x in [10, 50), scale 0.5; box (10, 5)-(40, 25) -> (0, 2.5)-(15, 12.5)
    assert torch.allclose(ds.boxes[0], torch.tensor([0.0, 2.5, 15.0, 12.5]))
    # image 3: 80x40 -> crop x in [20, 60), scale 0.5; box (2, 4)-(72, 34) clipped to (0, 2)-(20, 17)
    assert torch.allclose(ds.boxes[1], torch.tensor([0.0, 2.0, 20.0, 17.0]))
    # image 4: 30x60 (tall) -> crop y in [15, 45), scale 2/3; box (5, 12.5)-(15, 32.5) -> (10/3, 0)-(10, 35/3)
    assert torch.allclose(ds.boxes[2], torch.tensor([10 / 3, 0.0, 10.0, 35 / 3]), atol=1e-5)


def test_cub_subset_and_indexing_keep_boxes(tmp_path: Path) -> None:
    _write_cub(tmp_path)
    ds = load("cub", "train", data_dir=tmp_path, size=8)
    sub = ds.subset([2, 0])
    assert isinstance(sub, BoxedImageDataset) and torch.equal(sub.boxes, ds.boxes[[2, 0]])
    assert torch.equal(sub.images, ds.images[[2, 0]]) and sub.labels.tolist() == [2, 0]
    masked = ds.subset(ds.labels > 0)
    assert torch.equal(masked.boxes, ds.boxes[1:]) and len(ds.subset(slice(1, 2)).boxes) == 1
    x, y = ds[1]  # indexing still yields (image, label)
    assert x.shape == (3, 8, 8) and int(y) == 1
    assert len(load("cub", "train", data_dir=tmp_path, size=8, limit=2).boxes) == 2


@pytest.mark.parametrize(
    ("boxes", "match"),
    [
        (torch.zeros(2, 4, dtype=torch.float64), "float32"),
        (torch.zeros(2, 3), r"shape \(2, 4\)"),
        (torch.tensor([[0.0, 0.0, 9.0, 8.0], [0, 0, 1, 1]]), r"x1 <= 8"),
        (torch.tensor([[3.0, 0.0, 2.0, 8.0], [0, 0, 1, 1]]), "at row 0"),
        (torch.tensor([[0.0, 0.0, 1.0, 1.0], [0, float("nan"), 1, 1]]), "finite"),
        ([[0, 0, 1, 1]] * 2, "torch.Tensor"),
    ],
)
def test_boxed_dataset_validation(boxes: object, match: str) -> None:
    images, labels = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=match):
        BoxedImageDataset(images, labels, ("a", "b"), boxes=boxes)


def test_cub_missing_files(tmp_path: Path) -> None:
    d = _write_cub(tmp_path)
    (d / "bounding_boxes.txt").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load("cub", "test", data_dir=tmp_path)
    assert f"{d} lacks bounding_boxes.txt" in str(info.value)
    (d / "bounding_boxes.txt").write_text("1 10 5 30 20\n")  # ids 2..5 have no box
    with pytest.raises(ValueError, match="expected an entry for image id 2"):
        load("cub", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- balancing by augmentation


def _unbalanced() -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    base = F.interpolate(torch.rand(8, 3, 4, 4, generator=g), size=16, mode="bilinear", align_corners=False)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 2])
    return ImageDataset(base.clamp(0, 1), labels, ("a", "b", "c", "d-empty"), "toy")


def test_balance_equal_counts_and_determinism() -> None:
    ds = _unbalanced()
    state = torch.get_rng_state()
    with pytest.warns(UserWarning, match="d-empty"):
        out = balance_by_augmentation(ds, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)  # torch's global generator untouched
    assert out.labels.bincount(minlength=4).tolist() == [5, 5, 5, 0]
    assert out.classes == ds.classes and out.name == "toy" and out.images.dtype == torch.float32
    assert torch.equal(out.images[:8], ds.images) and torch.equal(out.labels[:8], ds.labels)
    assert out.labels[8:].tolist() == [1, 1, 1, 2, 2, 2, 2]
    assert float(out.images.min()) >= 0 and float(out.images.max()) <= 1
    new = out.images[8:]
    # every augmented image differs from every original (a random rotation/translation/projection was applied)
    assert float(torch.cdist(new.flatten(1), ds.images.flatten(1)).min()) > 0.1
    again = balance_by_augmentation(ds, generator=torch.Generator().manual_seed(1))
    other = balance_by_augmentation(ds, generator=torch.Generator().manual_seed(2))
    assert torch.equal(again.images, out.images) and not torch.equal(other.images[8:], new)
    small_batches = balance_by_augmentation(ds, generator=torch.Generator().manual_seed(1), batch_size=2)
    assert small_batches.labels.bincount(minlength=4).tolist() == [5, 5, 5, 0]


def test_balance_identity_pipeline_copies_same_class_sources_evenly() -> None:
    ds = _unbalanced()
    out = balance_by_augmentation(
        ds, generator=torch.Generator().manual_seed(3), per_class=7, rotation=0, translate=0, distortion=0
    )
    assert out.labels.bincount(minlength=4).tolist() == [7, 7, 7, 0]
    dist = torch.cdist(out.images[8:].flatten(1), ds.images.flatten(1))
    source = dist.argmin(1)
    assert float(dist.min(1).values.max()) < 1e-3  # identity transforms: exact copies
    assert torch.equal(ds.labels[source], out.labels[8:])  # labels follow their source
    uses = source.bincount(minlength=8)
    assert int(uses[:5].sum()) == 2 and int(uses[:5].max()) == 1  # class a: 2 copies of distinct images
    assert uses[5:7].tolist() == [3, 2] or uses[5:7].tolist() == [2, 3]  # class b: 5 copies over 2 images
    assert int(uses[7]) == 6  # class c: one image copied 6 times


def test_balance_per_class_below_largest_and_validation() -> None:
    ds = _unbalanced()
    out = balance_by_augmentation(ds, generator=torch.Generator().manual_seed(0), per_class=3)
    assert out.labels.bincount(minlength=4).tolist() == [5, 3, 3, 0]  # larger classes are kept as they are
    with pytest.raises(ValueError, match="per_class"):
        balance_by_augmentation(ds, generator=torch.Generator(), per_class=0)
    with pytest.raises(ValueError, match=r"generator: expected a torch\.Generator"):
        balance_by_augmentation(ds, generator=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="distortion"):
        augmentation_pipeline(distortion=1.5)
    with pytest.raises(ValueError, match="rotation"):
        augmentation_pipeline(rotation=-1)
    x = torch.rand(3, 3, 8, 8)
    assert augmentation_pipeline()(x).shape == (3, 3, 8, 8)
