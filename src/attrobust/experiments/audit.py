"""Audit a user's own classifier: the attributional-robustness evaluation and the report for any ``nn.Module``.

``attrobust audit --model package.module:factory --weights model.safetensors --data mnist|DIR`` (or :func:`audit`
from Python) builds the model with ``factory()``, loads the weights (:mod:`.audit_inputs`: ``.safetensors`` or a
weights-only ``.pt``; ``module.`` prefixes of DataParallel/DDP stripped), inspects it for the usual pitfalls and
runs :func:`~attrobust.experiments.evaluate.evaluate` (natural and PGD accuracy, IFIA top-k and Kendall, and any
suite metrics), then writes the HTML/Markdown report.

The model must map float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)``: a model trained on normalised
inputs is wrapped with :func:`attrobust.models.with_normalization`. The inspection warns when the model is in
train mode, when its outputs look like probabilities (attacks and attributions expect logits), and when second
derivatives through it vanish (ReLU applied as a function cannot be swapped for a softplus, so IFIA would see zero
curvature). ``DIR`` is a folder of class sub-folders of images (class names sorted, labels in that order), read at
the images' own size, or at ``size`` / the model's declared size (``model.spec["input_size"]`` of attrobust
models, or ``model.input_size``), resized with a warning: never silently.

The protocol is the data's paper preset (or ``config``), like ``evaluate``'s, with three choices of the audit:

- the sample: ``"balanced"`` (default) takes the first ``n`` of a seeded order that deals the classes in turn,
  so any ``n`` >= the number of classes covers every class (``"first"`` and ``"seeded"`` are ``evaluate``'s);
- the device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available);
- IFIA's softplus surrogate ``beta`` is the protocol's (the preset's, else ``EvalConfig``'s 1.0, the RAR code's
  ``tf.nn.softplus``), as in ``evaluate``, so an audit and an evaluation of the same data share one protocol
  whatever the architecture; only ``ifia.beta: null`` on a model with ``nn.ReLU`` modules becomes 10 (IFIA
  needs second derivatives).

Before the work it prints the protocol and an estimate of the run time (gradient passes times one timed on the
data). The audit never changes the user's model: its state dict (buffers included, e.g. batch-norm running
statistics and ``num_batches_tracked``), the device of its tensors and the ``training`` flag of every submodule are
the same, bit for bit, after it.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import data as data_lib
from .._checks import check_choice, has_relu
from ..attacks import model_mode
from ..attributions import grad_of
from ..data import ImageDataset
from .audit_inputs import as_image_dataset, balanced_order, load_factory, load_image_folder, load_weights
from .config import EvalConfig, merge
from .evaluate import evaluate
from .protocol import check_budget, eval_defaults
from .report import write_report
from .seeding import derive_seed

SAMPLES = ("balanced", "first", "seeded")
DEVICES = ("cpu", "cuda", "auto")
SURROGATE_BETA = 10.0  # IFIA's softplus beta for a ReLU model whose protocol sets ``ifia.beta: null``

__all__ = ["audit", "inspect", "load_factory", "load_image_folder", "load_weights", "unchanged"]


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
    data: Any,
    *,
    data_dir: str | Path | None = None,
    split: str = "test",
    size: int | tuple[int, int] | None = None,
    config: EvalConfig | None = None,
    sample: str = "balanced",
    device: str | None = None,
    out_dir: str | Path = "audit",
    title: str = "attrobust audit",
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``data`` and write ``<out_dir>/results.json`` and the report.

    Args:
        model: an ``nn.Module`` mapping float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)``.
        data: a registered dataset name (``attrobust list``), a folder of class sub-folders of images, an
            :class:`ImageDataset`, a pair ``(x, y)`` of tensors (``x`` float ``(N, C, H, W)`` in [0, 1], ``y``
            integer ``(N,)``), a torch ``Dataset`` of ``(image, label)`` items or a ``DataLoader`` of ``(images,
            labels)`` batches (held in memory; class names ``"0"``.. unless an ImageDataset names them).
        data_dir, split: where a named dataset lies and which split is evaluated.
        size: image size of a folder of images (int or ``(H, W)``); None: the model's declared input size, else
            the images' own (one size for all).
        config: the evaluation protocol; None: the data's paper preset (data without one has no budget, so
            ``config`` must give ``pgd``/``ifia`` ``eps``, ``step_size`` and ``ifia.k``).
        sample: ``"balanced"`` (the first ``n`` of a seeded order dealing the classes in turn), ``"first"`` or
            ``"seeded"`` (``config.sample``'s meanings); it replaces ``config.sample``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available); None: ``config.device``.
        out_dir, title: where the results and report go, and the report's heading.
        progress: progress bars; also prints the protocol and the run-time estimate when ``echo`` is None.
        echo: prints the protocol and the run-time estimate before the work.

    Returns ``{"results": ..., "report": (html, md), "warnings": [...], "estimate_s": float}``.
    """
    check_choice(sample, "sample", SAMPLES)
    say = echo if echo is not None else (print if progress else None)
    ds, name = _dataset(model, data, data_dir, split, size)
    config = eval_defaults(name) if config is None else config
    check_budget(config, name, config.metrics)  # a folder of images has no paper protocol, hence no budget
    config = merge(config, _audit_overrides(config, model, sample, device))
    if sample == "balanced":
        order = balanced_order(ds.labels, torch.Generator().manual_seed(derive_seed(config.seed, "audit/sample")))
        ds = ImageDataset(ds.images[order], ds.labels[order], ds.classes,
                          f"{ds.name} (class-balanced order, seed {config.seed})")  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # the saliency examples are written before the results file
    with unchanged(model):
        probe = ds.images[: min(8, len(ds))].to(_device_of(model))
        found = inspect(model, probe, ds.labels[: len(probe)].to(probe.device))
        seconds, how = estimate_seconds(model, ds, config)
        if say is not None:
            say(f"audit: {type(model).__name__} on {ds.name}, {len(ds)} samples of {tuple(ds.images.shape[1:])}, "
                f"{len(ds.classes)} classes; estimated run time {_duration(seconds)} ({how})")  # fmt: skip
        results = evaluate(model, config, dataset=ds, progress=progress, out=out / "results.json", db=False, echo=say)
    label = type(model).__name__
    paths = write_report({label: results}, out, title=title)
    return {"results": results, "report": paths, "warnings": found, "estimate_s": seconds}


def _dataset(
    model: nn.Module, data: Any, data_dir: str | Path | None, split: str, size: int | tuple[int, int] | None
) -> tuple[ImageDataset, str | None]:
    """The data as an :class:`ImageDataset` and the name whose paper preset applies (None for a folder, tensors,
    a Dataset or a DataLoader)."""
    if isinstance(data, str | Path) and Path(data).is_dir():
        size = size if size is not None else declared_size(model)
        return load_image_folder(data, size=size, channels=_input_channels(model)), None
    if isinstance(data, str | Path):
        return data_lib.load(str(data), split, data_dir), str(data)
    if isinstance(data, ImageDataset):
        return data, data.name  # e.g. "mnist" from data.load: that dataset's paper preset
    ds = as_image_dataset(data)
    with model_mode(model, "eval"), torch.no_grad():
        k = int(model(ds.images[:1].to(_device_of(model))).shape[-1])
    if k > len(ds.classes):  # one class name per model output, also for classes absent from the data
        ds = ImageDataset(ds.images, ds.labels, tuple(str(c) for c in range(k)), ds.name)
    return ds, None


def _audit_overrides(config: EvalConfig, model: nn.Module, sample: str, device: str | None) -> dict[str, Any]:
    """The audit's settings over ``config``: the sample, the device (``auto`` resolved) and IFIA's beta rule."""
    overrides: dict[str, Any] = {"sample": "first" if sample == "balanced" else sample}
    if device is not None:
        check_choice(device, "device", DEVICES)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device: expected 'cpu' or 'auto' on a machine without CUDA, got 'cuda'")
        overrides["device"] = device
    if has_relu(model) and config.ifia.beta is None:
        overrides["ifia"] = {"beta": SURROGATE_BETA}
    return overrides


def declared_size(model: nn.Module) -> int | None:
    """The input size a model declares: ``model.spec["input_size"]`` (attrobust models) or ``model.input_size``."""
    spec = getattr(model, "spec", None)
    value = spec.get("input_size") if isinstance(spec, dict) else getattr(model, "input_size", None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def estimate_seconds(model: nn.Module, ds: ImageDataset, config: EvalConfig) -> tuple[float, str]:
    """A rough run time of the evaluation: the gradient passes its attacks make per sample (PGD ``steps``; IFIA
    ``restarts x steps`` of a double-backward step and a judged attribution, each of ``ig_steps`` points for IG)
    times the seconds of one input gradient per sample, timed on a batch of the data on the evaluation's device
    (the model is in eval mode and nothing is written). Suite metrics are not counted. Returns the seconds and how
    they were counted."""
    n = len(ds) if config.n is None else min(config.n, len(ds))
    device = torch.device(config.device)
    x = ds.images[: min(config.batch_size, len(ds), 32)].to(device)
    y = ds.labels[: len(x)].to(device)
    home = _device_of(model)
    per_sample = math.inf
    try:
        model.to(device)
        with model_mode(model, "eval"), torch.enable_grad():
            for _ in range(2):  # the first pass warms up (allocations, kernels)
                start = time.perf_counter()
                xi = x.detach().requires_grad_(True)
                grad_of(model(xi).gather(1, y[:, None]).sum(), xi)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                per_sample = (time.perf_counter() - start) / len(x)
    finally:
        model.to(home)
    points = config.ifia.ig_steps if config.ifia.attribution in ("ig", "integrated_gradients") else 1
    pgd = 0 if config.skip_pgd else config.pgd.steps
    ifia = 0 if config.skip_ifia else config.ifia.restarts * config.ifia.steps * (4 * points + 1)
    how = (f"{n} samples x {1 + pgd + ifia} gradient passes (PGD {pgd}, IFIA {config.ifia.restarts} x "
           f"{config.ifia.steps} x (4 x {points} + 1)) x {1e3 * per_sample:.3g} ms measured"
           f"{'; suite metrics not counted' if config.metrics else ''}")  # fmt: skip
    return n * (1 + pgd + ifia) * per_sample, how


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"~{seconds:.0f} s"
    return f"~{seconds / 60:.0f} min" if seconds < 5400 else f"~{seconds / 3600:.1f} h"


@contextmanager
def unchanged(model: nn.Module) -> Iterator[None]:
    """Give ``model`` back exactly as it came: every submodule's ``training`` flag and the model's device are
    restored, and a state dict entry (parameter or buffer) that the work wrote is restored too, with a warning
    naming it (the evaluation itself runs in eval mode and is meant to write nothing, so that would be a defect to
    report)."""
    modes = [(m, m.training) for m in model.modules()]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    device = _device_of(model)
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag
        if _device_of(model) != device:  # the evaluation ran on another device
            model.to(device)
        current = model.state_dict()
        written = [k for k, v in state.items() if not torch.equal(current[k], v)]
        if written:
            model.load_state_dict(state)
            warnings.warn(f"audit: the evaluation wrote {', '.join(written)} of the model; restored", stacklevel=3)


def _input_channels(model: nn.Module) -> int:
    """The input channels of the first convolution (3 when there is none)."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return 3 if first is None else int(first.in_channels)


def _device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model without any)."""
    return next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
