"""Audit a user's own classifier: the attributional-robustness evaluation and the report for any ``nn.Module``.

``attrobust audit --model package.module:factory --weights model.pt --data mnist|DIR`` (or :func:`audit` from
Python) builds the model with ``factory()``, loads the weights (``torch.load(weights_only=True)``: a state dict,
or a dict holding one under ``"state_dict"``/``"model"``), inspects it for the usual pitfalls and runs
:func:`~attrobust.experiments.evaluate.evaluate` (natural and PGD accuracy, IFIA top-k and Kendall, and any
suite metrics), then writes the HTML/Markdown report.

The model must map float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)`` (put any normalisation inside
it). The inspection warns when the model is in train mode, when its outputs look like probabilities (attacks and
attributions expect logits), and when second derivatives through it vanish (ReLU applied as a function cannot be
swapped for a softplus, so IFIA would see zero curvature). ``DIR`` is a folder of class sub-folders of images
(class names sorted, labels in that order), resized to ``size``.

The audit never changes the user's model: its state dict (buffers included, e.g. batch-norm running statistics
and ``num_batches_tracked``) and the ``training`` flag of every submodule are the same, bit for bit, after it.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import data as data_lib
from .._checks import has_relu
from ..attacks import model_mode
from ..attributions import grad_of
from ..data import ImageDataset
from ..data.imagenette import IMAGE_SUFFIXES
from ..data.images import decode_images, to_image_tensor
from ..models import check_finite_weights
from .config import EvalConfig, merge
from .evaluate import evaluate
from .protocol import check_budget, eval_defaults
from .report import write_report


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


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` (never unpickling code: ``weights_only=True``) into ``model`` (strict)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights: file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a non-tensor pickle or a corrupt file
        raise ValueError(f"weights: {path} is not a weights-only state dict ({err})") from None
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"weights: expected a state dict of tensors in {path}, got {type(state).__name__}")
    check_finite_weights(state, f"weights: {path}")
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"weights: {path} does not fit the model ({err})") from None


def load_image_folder(directory: str | Path, size: int = 224, channels: int = 3) -> ImageDataset:
    """A folder of class sub-folders of images as an :class:`ImageDataset` (``(N, channels, size, size)``)."""
    root = Path(directory)
    classes = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if not classes:
        raise FileNotFoundError(f"data: expected a folder of class sub-folders of images, got {root}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ".ppm", ".bmp"))
        paths += files
        labels += [label] * len(files)
    pixels, _ = decode_images(paths, size, desc=root.name)
    images = to_image_tensor(pixels)
    if channels == 1:
        images = images.mean(1, keepdim=True)
    return ImageDataset(images, torch.as_tensor(np.asarray(labels), dtype=torch.int64), tuple(classes), root.name)


def inspect(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[str]:
    """The pitfalls found on a probe batch ``x (N, C, H, W)``, ``y (N,)``; each also raised as a warning."""
    found = []
    if model.training:
        found.append("the model is in train mode: it is evaluated in eval mode, check that this is intended")
    with model_mode(model, "eval"), torch.no_grad():  # as evaluated: no batch statistics, no buffer written
        out = model(x)
    if out.dim() != 2 or out.shape[0] != x.shape[0]:
        raise ValueError(f"model: expected logits of shape ({x.shape[0]}, K), got {tuple(out.shape)}")
    if bool((out >= 0).all()) and bool(torch.allclose(out.sum(1), out.new_ones(len(out)), atol=1e-4)):
        found.append("the outputs are non-negative and sum to 1: they look like probabilities, not logits "
                     "(remove the final softmax)")  # fmt: skip
    with model_mode(model, "eval"), torch.enable_grad():
        xi = x[:2].detach().requires_grad_(True)
        g = grad_of(model(xi).gather(1, y[:2, None]).sum(), xi, create_graph=True)
        second = grad_of((g * torch.randn_like(g)).sum(), xi) if g.requires_grad else torch.zeros_like(xi)
    if float(second.abs().max()) == 0.0 and not has_relu(model):
        found.append("second derivatives through the model vanish and it has no nn.ReLU modules to swap for "
                     "softplus: IFIA will see no curvature (use nn.ReLU modules, or smooth activations)")  # fmt: skip
    for message in found:
        warnings.warn(f"audit: {message}", UserWarning, stacklevel=2)
    return found


def audit(
    model: nn.Module,
    data: str | Path | ImageDataset,
    *,
    data_dir: str | Path | None = None,
    split: str = "test",
    size: int = 224,
    config: EvalConfig | None = None,
    out_dir: str | Path = "audit",
    title: str = "attrobust audit",
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` (a dataset name, a folder of class sub-folders, or an ImageDataset) and
    write ``<out_dir>/results.json`` and the report. ``config`` defaults to the dataset's paper protocol (a
    folder of images has none: ``config`` must then give the budget, ``pgd``/``ifia`` ``eps``, ``step_size`` and
    ``ifia.k``); IFIA gets a softplus surrogate (beta 10) when the model has ``nn.ReLU`` modules and the config
    sets no beta.

    Returns ``{"results": ..., "report": (html, md), "warnings": [...]}``.
    """
    if isinstance(data, ImageDataset):
        ds, name = data, data.name
    elif Path(str(data)).is_dir():
        channels = _input_channels(model)
        ds, name = load_image_folder(data, size=size, channels=channels), None
    else:
        ds, name = data_lib.load(str(data), split, data_dir), str(data)
    config = eval_defaults(name) if config is None else config
    check_budget(config, name, config.metrics)  # a folder of images has no paper protocol, hence no budget
    if has_relu(model) and config.ifia.beta is None:
        config = merge(config, {"ifia": {"beta": 10.0}})
    probe = ds.images[: min(8, len(ds))]
    out = Path(out_dir)
    with unchanged(model):
        found = inspect(model, probe, ds.labels[: len(probe)])
        results = evaluate(model, config, dataset=ds, progress=progress, out=out / "results.json", db=False)
    label = type(model).__name__
    paths = write_report({label: results}, out, title=title)
    return {"results": results, "report": paths, "warnings": found}


@contextmanager
def unchanged(model: nn.Module) -> Iterator[None]:
    """Give ``model`` back exactly as it came: every submodule's ``training`` flag is restored, and a state dict
    entry (parameter or buffer) that the work wrote is restored too, with a warning naming it (the evaluation
    itself runs in eval mode and is meant to write nothing, so that would be a defect to report)."""
    modes = [(m, m.training) for m in model.modules()]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag
        current = model.state_dict()
        written = [k for k, v in state.items() if not torch.equal(current[k], v)]
        if written:
            model.load_state_dict(state)
            warnings.warn(f"audit: the evaluation wrote {', '.join(written)} of the model; restored", stacklevel=3)


def _input_channels(model: nn.Module) -> int:
    """The input channels of the first convolution (3 when there is none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return 3 if first is None else int(first.in_channels)
