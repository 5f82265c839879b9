"""Shared pieces of the on-disk image datasets: where the files are, decoding and resizing, subsets.

- :func:`find_dataset_dir` locates a dataset below ``data_dir`` (or ``$ATTROBUST_DATA``) and raises
  ``FileNotFoundError`` naming every directory searched and every file expected there.
- :func:`decode_image` / :func:`decode_images` read image files with Pillow (any format it knows: JPEG, PPM,
  PNG, ...) as RGB and resize them with antialiasing (Pillow's bilinear filter widens with the reduction factor)
  to a fixed size, either stretching the whole image (or a region of interest) or centre-cropping the largest
  region of the target aspect ratio. The source region that was resampled is returned so that boxes can follow.
- :func:`to_image_tensor` turns ``uint8 (N, H, W, C)`` pixels into the float32 ``(N, C, H, W)`` in [0, 1] of
  :class:`~attrobust.data.base.ImageDataset`.
- :func:`read_mat` reads variables of a MATLAB file (SVHN, Flower-17 splits) with ``scipy.io.loadmat``.
- :func:`select_examples` keeps the first examples of every class (``max_per_class``) and overall (``limit``),
  before anything is decoded; :func:`decode_subset` does that and the decoding for a folder loader, whose
  options travel in one :class:`Decoding`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.io
import torch
from PIL import Image
from tqdm.auto import tqdm

from attrobust._checks import check_choice, check_int

ENV_VAR = "ATTROBUST_DATA"
RESIZE_MODES = ("stretch", "center_crop")
PROGRESS_THRESHOLD = 1000
Box = tuple[float, float, float, float]


def candidate_dirs(data_dir: str | Path | None, subdirs: Sequence[str], dataset: str, layout: str) -> list[Path]:
    """Directories that may hold ``dataset``, in search order.

    With ``data_dir``: ``data_dir`` itself, then ``data_dir/<s>`` for each ``s`` in ``subdirs``. Without:
    ``$ATTROBUST_DATA/<s>``. A subdir containing ``*`` is a glob pattern expanded (sorted) to existing
    directories. Raises ``FileNotFoundError`` (showing ``layout``) when neither ``data_dir`` nor the variable is
    given: datasets are never downloaded.
    """
    if data_dir is not None:
        base, dirs = Path(data_dir), [Path(data_dir)]
    elif os.environ.get(ENV_VAR):
        base, dirs = Path(os.environ[ENV_VAR]), []
    else:
        raise FileNotFoundError(
            f"{dataset}: no data directory given; pass data_dir=<directory> (data.data_dir in a run config) or "
            f"set {ENV_VAR}. Expected layout: {layout}. Nothing is downloaded: put the files there first"
        )
    for sub in subdirs:
        if "*" in sub:
            dirs.extend(p for p in sorted(base.glob(sub)) if p.is_dir())
        else:
            dirs.append(base / sub)
    return list(dict.fromkeys(dirs))


def find_dataset_dir(
    data_dir: str | Path | None,
    subdirs: Sequence[str],
    required: Sequence[str],
    dataset: str,
    layout: str,
) -> Path:
    """The first of :func:`candidate_dirs` that contains every relative path in ``required`` (files or
    directories, e.g. ``"data_batch_1"`` or ``"Final_Training/Images"``).

    Raises ``FileNotFoundError`` listing the directories searched, the expected paths and, for the directory
    holding most of them, which ones are missing.
    """
    dirs = candidate_dirs(data_dir, subdirs, dataset, layout)
    best: tuple[int, Path, list[str]] | None = None
    for directory in dirs:
        missing = [r for r in required if not (directory / r).exists()]
        if not missing:
            return directory
        found = len(required) - len(missing)
        if found and (best is None or found > best[0]):
            best = (found, directory, missing)
    detail = f"; {best[1]} lacks {', '.join(best[2])}" if best is not None else ""
    raise FileNotFoundError(
        f"{dataset}: expected {', '.join(required)} in one of: {', '.join(map(str, dirs))}{detail}. "
        f"Expected layout: {layout}. Nothing is downloaded: put the files there (data_dir / {ENV_VAR})"
    )


def read_mat(path: str | Path, names: Sequence[str]) -> dict[str, np.ndarray]:
    """Variables ``names`` of the MATLAB (v4 - v7.2) file ``path`` (those present; the caller checks).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the file when scipy cannot read it
    (not a MATLAB file, truncated, or v7.3 / HDF5).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MATLAB file not found: {path}")
    try:
        mat = scipy.io.loadmat(path, variable_names=list(names))
    except Exception as exc:  # scipy raises ValueError, NotImplementedError, IndexError, ... on bad files
        raise ValueError(f"{path}: expected a MATLAB (v4 - v7.2) file, got an unreadable one ({exc!r})") from exc
    return {k: v for k, v in mat.items() if k in names}


def check_size(size: int | Sequence[int], name: str = "size") -> tuple[int, int]:
    """``(height, width)`` from an int (square) or a pair of ints, each >= 1."""
    if isinstance(size, int) and not isinstance(size, bool):
        check_int(size, name, 1)
        return size, size
    if isinstance(size, Sequence) and not isinstance(size, str) and len(size) == 2:
        return check_int(size[0], f"{name} height", 1), check_int(size[1], f"{name} width", 1)
    raise ValueError(f"{name}: expected an int or a (height, width) pair, got {size!r}")


def source_box(width: int, height: int, size: tuple[int, int], mode: str, roi: Box | None = None) -> Box:
    """Region ``(x0, y0, x1, y1)`` of a ``width x height`` image that is resampled to ``size = (H, W)``.

    Coordinates are continuous (pixel ``i`` spans ``[i, i + 1)``). ``roi`` (clipped to the image) restricts the
    region first. ``"stretch"`` resamples the whole region; ``"center_crop"`` its largest centred sub-region with
    the aspect ratio ``W / H``. A point ``(x, y)`` of the source lands at
    ``((x - x0) * W / (x1 - x0), (y - y0) * H / (y1 - y0))`` in the output.
    """
    check_choice(mode, "resize_mode", RESIZE_MODES)
    x0, y0, x1, y1 = 0.0, 0.0, float(width), float(height)
    if roi is not None:
        x0, y0 = min(max(float(roi[0]), 0.0), width - 1.0), min(max(float(roi[1]), 0.0), height - 1.0)
        x1, y1 = min(max(float(roi[2]), x0 + 1.0), float(width)), min(max(float(roi[3]), y0 + 1.0), float(height))
    if mode == "center_crop":
        out_h, out_w = size
        w, h = x1 - x0, y1 - y0
        if w * out_h > h * out_w:  # too wide: crop the sides
            new_w = h * out_w / out_h
            x0, x1 = x0 + (w - new_w) / 2, x0 + (w + new_w) / 2
        else:
            new_h = w * out_h / out_w
            y0, y1 = y0 + (h - new_h) / 2, y0 + (h + new_h) / 2
    return x0, y0, x1, y1


def decode_image(
    path: str | Path, size: tuple[int, int], mode: str = "stretch", roi: Box | None = None
) -> tuple[np.ndarray, Box]:
    """Read ``path`` as RGB and resample :func:`source_box` of it to ``size = (H, W)`` with Pillow's
    antialiased bilinear filter.

    Returns ``(pixels, box)``: uint8 ``(H, W, 3)`` and the source region used. Raises ``FileNotFoundError`` for a
    missing file and ``ValueError`` naming the file when Pillow cannot decode it.
    """
    path = Path(path)
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image file not found: {path}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path}: expected an image file Pillow can decode, got error: {exc}") from None
    box = source_box(rgb.width, rgb.height, size, mode, roi)
    out = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR, box=box)
    return np.asarray(out, dtype=np.uint8), box


def show_progress(n: int, progress: bool | None) -> bool:
    """Whether to draw a progress bar for ``n`` files: ``progress`` when given, else ``n > 1000``."""
    return n > PROGRESS_THRESHOLD if progress is None else bool(progress)


def decode_images(
    paths: Sequence[str | Path],
    size: int | Sequence[int],
    *,
    mode: str = "stretch",
    rois: Sequence[Box | None] | None = None,
    progress: bool | None = None,
    workers: int | None = None,
    desc: str = "images",
) -> tuple[np.ndarray, np.ndarray]:
    """Decode and resize every file of ``paths`` (see :func:`decode_image`), in order.

    Returns ``(pixels, boxes)``: uint8 ``(N, H, W, 3)`` and float64 ``(N, 4)`` source regions
    ``(x0, y0, x1, y1)``. ``rois`` gives one optional region of interest per file. A tqdm bar is drawn when
    ``progress`` is true, or when it is ``None`` and there are more than 1000 files. ``workers`` threads decode
    in parallel (default ``min(8, cpu count)``); the result does not depend on it.
    """
    hw = check_size(size)
    check_choice(mode, "resize_mode", RESIZE_MODES)
    n = len(paths)
    if n == 0:
        raise ValueError(f"{desc}: expected at least one image file, got none")
    if rois is not None and len(rois) != n:
        raise ValueError(f"rois: expected one entry per file ({n}), got {len(rois)}")
    workers = min(8, os.cpu_count() or 1) if workers is None else check_int(workers, "workers", 1)
    pixels = np.empty((n, hw[0], hw[1], 3), dtype=np.uint8)
    boxes = np.empty((n, 4), dtype=np.float64)
    regions = rois if rois is not None else [None] * n

    def work(i: int) -> int:
        pixels[i], boxes[i] = decode_image(paths[i], hw, mode, regions[i])
        return i

    with tqdm(total=n, desc=desc, unit="img", disable=not show_progress(n, progress)) as bar:
        if workers == 1:
            for i in range(n):
                work(i)
                bar.update(1)
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for _ in pool.map(work, range(n)):
                    bar.update(1)
    return pixels, boxes


def to_image_tensor(pixels: np.ndarray, channels_last: bool = True) -> torch.Tensor:
    """uint8 pixels ``(N, H, W, C)`` (or ``(N, C, H, W)`` with ``channels_last=False``) as float32
    ``(N, C, H, W)`` with values ``k / 255`` in [0, 1]."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8 or pixels.ndim != 4:
        got = f"{pixels.dtype} {pixels.shape}" if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise ValueError(f"pixels: expected a uint8 array with 4 dims, got {got}")
    x = torch.from_numpy(np.ascontiguousarray(pixels))
    if channels_last:
        x = x.permute(0, 3, 1, 2)
    return x.float().div_(255.0).contiguous()


def select_examples(labels: Sequence[int] | np.ndarray, limit: int | None, max_per_class: int | None) -> np.ndarray:
    """Indices (ascending) of the examples kept: the first ``max_per_class`` of each class, then the first
    ``limit`` of those (``None``: no restriction). Raises ``ValueError`` for a non-positive option."""
    y = np.asarray(labels, dtype=np.int64)
    keep = np.arange(y.shape[0])
    if max_per_class is not None:
        check_int(max_per_class, "max_per_class", 1)
        rank = np.zeros_like(y)
        seen: dict[int, int] = {}
        for i, label in enumerate(y.tolist()):
            rank[i] = seen.get(label, 0)
            seen[label] = rank[i] + 1
        keep = keep[rank < max_per_class]
    if limit is not None:
        check_int(limit, "limit", 1)
        keep = keep[:limit]
    return keep


@dataclass(frozen=True)
class Decoding:
    """The options every folder loader shares: target ``size`` ``(H, W)``, ``resize_mode`` (see
    :func:`decode_image`), the subset kept before decoding (``limit``, ``max_per_class``: see
    :func:`select_examples`), the progress bar (``None``: on above 1000 files) and the decoding threads."""

    size: tuple[int, int]
    resize_mode: str
    limit: int | None
    max_per_class: int | None
    progress: bool | None
    workers: int | None


def decode_subset(
    paths: Sequence[str | Path],
    labels: np.ndarray,
    how: Decoding,
    desc: str,
    rois: Sequence[Box | None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray]:
    """Select the examples of ``how`` from ``paths`` / int64 ``labels`` ``(M,)`` and decode them (with their
    regions of interest ``rois`` when given).

    Returns images float32 ``(N, 3, H, W)`` in [0, 1], labels int64 ``(N,)``, the kept indices ``(N,)`` into
    ``paths`` and the source regions ``(N, 4)`` that were resampled (for boxes that follow the images).
    """
    keep = select_examples(labels, how.limit, how.max_per_class)
    pixels, regions = decode_images(
        [paths[i] for i in keep],
        how.size,
        mode=how.resize_mode,
        rois=None if rois is None else [rois[i] for i in keep],
        progress=how.progress,
        workers=how.workers,
        desc=desc,
    )
    return to_image_tensor(pixels), torch.from_numpy(labels[keep]), keep, regions
