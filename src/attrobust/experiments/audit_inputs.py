"""What an audit is given, turned into what the evaluation takes: the user's model, its weights and its data.

- :func:`load_factory`: ``"package.module:factory"`` -> ``factory()``.
- :func:`read_weights` / :func:`load_weights`: a state dict from ``.safetensors`` or a ``.pt``/``.pth`` file read
  with ``torch.load(weights_only=True)`` (never unpickling code; a dict holding one under ``state_dict``,
  ``model_state_dict`` or ``model`` is unwrapped), with the ``module.`` prefix of ``DataParallel``/DDP and the
  ``_orig_mod.`` prefix of ``torch.compile`` stripped. A whole pickled model is refused with the way to save its
  weights instead.
- :func:`load_image_folder`: a folder of class sub-folders of images at the images' own size (or an explicit one).
- :func:`as_image_dataset`: an ``ImageDataset``, a ``(x, y)`` pair of tensors, a torch ``Dataset`` of ``(image,
  label)`` items or a ``DataLoader`` of ``(images, labels)`` batches, as an :class:`ImageDataset` held in memory.
- :func:`balanced_order`: the seeded order in which the first ``n`` samples cover every class.

Tensor contract: images float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``.
"""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import ImageDataset
from ..data.imagenette import IMAGE_SUFFIXES
from ..data.images import decode_images, to_image_tensor
from ..models import check_finite_weights

STATE_KEYS = ("state_dict", "model_state_dict", "model")  # where training scripts nest the state dict
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DistributedDataParallel, torch.compile
FOLDER_SUFFIXES = (*IMAGE_SUFFIXES, ".ppm", ".bmp")
NORMALISED_HINT = (
    " (inputs normalised with a mean and std? give the images in [0, 1] and wrap the model with "
    "attrobust.models.with_normalization(model, mean, std))"
)


def load_factory(spec: str) -> nn.Module:
    """``"package.module:factory"`` -> ``factory()``, which must return an ``nn.Module``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"model: expected 'package.module:factory', got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"model: cannot import {module_name!r} ({err})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"model: expected a callable {attr!r} in {module_name!r}, got {type(factory).__name__}")
    model = factory()
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected {spec}() to return an nn.Module, got {type(model).__name__}")
    return model


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in ``path`` (``.safetensors``, else a weights-only ``torch.load``), unwrapped and with the
    ``module.``/``_orig_mod.`` prefixes stripped; every tensor finite. ``ValueError`` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            state: Any = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"weights: {path} is not a readable safetensors file ({err})") from None
    else:
        state = _torch_load(path)
    if isinstance(state, dict):
        state = next((state[key] for key in STATE_KEYS if isinstance(state.get(key), dict)), state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights: expected a state dict of tensors in {path}, got {type(state).__name__}")
    state = strip_wrapper_prefixes(state)
    check_finite_weights(state, f"weights: {path}")
    return state


def _torch_load(path: Path) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of code (a whole model, anything else) or a corrupt file
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if found is None:
            raise ValueError(f"weights: {path} is not a weights-only state dict ({err})") from None
        raise ValueError(
            f"weights: {path} is not a weights-only state dict: it pickles {found.group(1)} (a whole model saved "
            "with torch.save(model)?). Loading it would run code from the file, which attrobust never does; save "
            "the weights instead, torch.save(model.state_dict(), 'weights.pt') or "
            "safetensors.torch.save_file(model.state_dict(), 'weights.safetensors'), and pass the factory that "
            "builds the model"
        ) from None


def strip_wrapper_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with the ``module.`` (DataParallel, DDP) and ``_orig_mod.`` (torch.compile) prefixes removed,
    each only when every key carries it."""
    changed = True
    while changed and state:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k.removeprefix(prefix): v for k, v in state.items()}
                changed = True
    return state


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load :func:`read_weights` of ``path`` into ``model`` (strict); ``ValueError`` naming what does not fit."""
    state = read_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights: {path} does not fit the model ({err})") from None


def load_image_folder(
    directory: str | Path, size: int | tuple[int, int] | None = None, channels: int = 3
) -> ImageDataset:
    """A folder of class sub-folders of images as an :class:`ImageDataset` ``(N, channels, H, W)``; class names
    sorted, labels in that order.

    ``size=None`` keeps the images' own size (all must share one: ``ValueError`` listing the sizes otherwise);
    an ``int`` (square) or ``(H, W)`` resizes every image (stretching) to it, with a warning for those it changes.
    """
    root = Path(directory)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"data: expected a folder of class sub-folders of images, got {root}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in FOLDER_SUFFIXES)
        paths += files
        labels += [label] * len(files)
    sizes = {}
    for p in paths:
        with Image.open(p) as img:
            sizes.setdefault((img.height, img.width), p)
    if size is None:
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w} ({p.name})" for (h, w), p in list(sizes.items())[:4])
            raise ValueError(
                f"data: expected images of one size in {root}, got {len(sizes)} sizes: {shown}; give size=<int> "
                "(--size) to resize them all, or the model's input size"
            )
        hw = next(iter(sizes), (1, 1))
    else:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        if set(sizes) - {hw}:
            warnings.warn(f"data: resizing the images of {root} (sizes {', '.join(f'{h}x{w}' for h, w in sizes)}) "
                          f"to {hw[0]}x{hw[1]}", UserWarning, stacklevel=2)  # fmt: skip
    pixels, _ = decode_images(paths, hw, desc=root.name)
    images = to_image_tensor(pixels)
    if channels == 1:
        images = images.mean(1, keepdim=True)
    return ImageDataset(images, torch.as_tensor(np.asarray(labels), dtype=torch.int64), tuple(classes), root.name)


def as_image_dataset(data: object) -> ImageDataset:
    """``data`` as an :class:`ImageDataset` (class names ``"0"``..``"K-1"``, K the largest label + 1, unless it is
    one): an ``ImageDataset``; a pair ``(x, y)``; a ``Dataset`` of ``(image, label)`` items;
    a ``DataLoader`` of ``(images, labels)`` batches. Images float in [0, 1] ``(N, C, H, W)`` (a Dataset's items
    ``(C, H, W)``), labels integers ``(N,)``. ``ValueError`` naming the accepted kinds otherwise."""
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, tuple | list) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        x, y, name = data[0], data[1], "tensors"
    elif isinstance(data, DataLoader):
        batches = [_pair(batch, "a DataLoader batch") for batch in data]
        if not batches:
            raise ValueError("data: expected a DataLoader with at least one batch, got none")
        x, y, name = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches]), type(data.dataset).__name__
    elif isinstance(data, Dataset) and hasattr(data, "__len__"):
        items = [_pair(data[i], "a Dataset item") for i in range(len(data))]
        if not items:
            raise ValueError(f"data: expected a non-empty Dataset, got {type(data).__name__} of length 0")
        x, y, name = torch.stack([i[0] for i in items]), torch.stack([i[1] for i in items]), type(data).__name__
    else:
        raise ValueError(
            "data: expected a dataset name, a folder of class sub-folders, an ImageDataset, a pair (x, y) of tensors, "
            f"a torch Dataset of (image, label) items or a DataLoader, got {type(data).__name__}"
        )
    if y.dtype.is_floating_point or y.dtype == torch.bool:
        raise ValueError(f"labels: expected integer class indices, got dtype {y.dtype}")
    y = y.reshape(-1).to(torch.int64)
    k = int(y.max()) + 1 if y.numel() else 1
    x = x.float() if x.is_floating_point() else x
    try:
        return ImageDataset(x.detach().cpu(), y.cpu(), tuple(str(c) for c in range(k)), name)
    except ValueError as err:
        raise ValueError(f"{err}{NORMALISED_HINT if '[0, 1]' in str(err) else ''}") from None


def _pair(item: object, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(image(s), label(s))`` of a Dataset item or DataLoader batch, as tensors (extra fields ignored)."""
    if not isinstance(item, tuple | list) or len(item) < 2:
        raise ValueError(f"data: expected {what} to be (image, label), got {type(item).__name__}")
    return torch.as_tensor(item[0]), torch.as_tensor(item[1])


def balanced_order(labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A permutation ``(N,)`` of the samples, random within each class (from ``generator``) and dealt round-robin
    over the classes, so that its first ``n`` samples cover ``min(n, number of classes present)`` classes and
    every class's share differs by at most one (until a class runs out)."""
    shuffled = torch.randperm(len(labels), generator=generator)
    lab = labels[shuffled]
    rank = torch.empty_like(lab)
    for c in lab.unique():
        members = lab == c
        rank[members] = torch.arange(int(members.sum()))
    key = rank * (int(lab.max()) + 1) + lab
    return shuffled[torch.argsort(key, stable=True)]
