"""Input validation shared by all layers.

Every check raises ``ValueError`` stating what was expected and what was given; evaluation pitfalls (a model
left in train mode, probability outputs, all-zero attributions) are warned about once per message.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

_WARNED: set[str] = set()
# True inside ``allow_any_range()``: image batches may hold values outside [0, 1] (still finite)
_ANY_RANGE: contextvars.ContextVar[bool] = contextvars.ContextVar("attrobust_any_range", default=False)


def warn_once(message: str, category: type[Warning] = UserWarning) -> None:
    """Emit ``message`` the first time it is seen in this process."""
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, category, stacklevel=3)


def check_images(x: object, name: str = "x", *, allow_empty: bool = False) -> torch.Tensor:
    """Validate an image batch: float tensor ``(N, C, H, W)`` with finite values in [0, 1].

    Returns ``x`` unchanged so the call can be used inline.
    """
    check_nchw(x, name)
    if x.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name}: expected a non-empty batch (N >= 1), got shape {tuple(x.shape)}")
    if x.numel() == 0:
        return x
    x_ = check_finite(x.detach(), name)
    lo, hi = float(x_.min()), float(x_.max())
    if (lo < 0.0 or hi > 1.0) and not _ANY_RANGE.get():
        raise ValueError(f"{name}: expected pixel values in [0, 1], got range [{lo:.4g}, {hi:.4g}]")
    return x


@contextlib.contextmanager
def allow_any_range() -> Iterator[None]:
    """Inside this context, image batches ``(N, C, H, W)`` may hold finite values outside [0, 1].

    The [0, 1] check is on by default because every budget, clamp and epsilon of attrobust is in pixel units;
    evaluators that perturb inputs past the image range on purpose (Quantus' MaxSensitivity adds uniform noise to
    the images) run attrobust attributions and metrics inside ``with attrobust.allow_any_range(): ...``. Shape,
    dtype and finiteness are still checked; attacks still clamp their iterates to [0, 1]. The setting is local to
    the thread (and asyncio task) that enters it and is restored on exit, also on an exception.
    """
    token = _ANY_RANGE.set(True)
    try:
        yield
    finally:
        _ANY_RANGE.reset(token)


def check_nchw(t: object, name: str) -> torch.Tensor:
    """Validate a floating-point tensor ``(N, C, H, W)`` (images or attributions; values unchecked); returns it."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape (N, C, H, W), got {type(t).__name__}")
    check_data_device(t, name)
    if t.dim() != 4:
        raise ValueError(f"{name}: expected shape (N, C, H, W) (4 dims), got {tuple(t.shape)} ({t.dim()} dims)")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    return t


def check_data_device(t: torch.Tensor, name: str) -> torch.Tensor:
    """Validate that the tensor ``t`` (any shape) holds data: a tensor on the ``meta`` device has only a shape, so
    no value of it can be checked or computed with. Returns ``t``."""
    if t.device.type == "meta":
        raise ValueError(f"{name}: expected a tensor with data (on cpu or cuda), got a tensor on the meta device")
    return t


def check_map_tensor(t: object, name: str, kinds: dict[int, str], *, real: bool = False) -> torch.Tensor:
    """Validate a tensor of maps whose number of dims is a key of ``kinds`` (dims -> what such a tensor holds, e.g.
    ``{2: "maps (N, D)", 4: "attributions (N, C, H, W)"}``) and whose dtype is floating point (``real=True``: any
    real dtype, integers included); values are unchecked. Returns it."""
    shapes = " or ".join(kind[kind.index("(") :] for kind in kinds.values())
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape {shapes}, got {type(t).__name__}")
    check_data_device(t, name)
    if t.dim() not in kinds:
        raise ValueError(f"{name}: expected {' or '.join(kinds.values())}, got shape {tuple(t.shape)}")
    if real and (t.dtype == torch.bool or t.is_complex()):
        raise ValueError(f"{name}: expected a real-valued tensor, got dtype {t.dtype}")
    if not real and not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point tensor, got dtype {t.dtype}")
    return t


def check_maps(t: object, name: str, kinds: dict[int, str]) -> torch.Tensor:
    """:func:`check_map_tensor` (floating point) plus a non-empty batch of non-empty maps with finite values."""
    check_map_tensor(t, name, kinds)
    if t.numel() == 0:
        raise ValueError(f"{name}: expected a non-empty batch of non-empty maps, got shape {tuple(t.shape)}")
    return check_finite(t, name)


def check_finite(t: torch.Tensor, name: str) -> torch.Tensor:
    """Validate that every entry of the tensor ``t`` (any shape) is finite; returns ``t``."""
    check_data_device(t, name)
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries")
    return t


def check_broadcastable(t: object, shape: torch.Size | tuple[int, ...], name: str) -> torch.Tensor:
    """Validate a tensor that must broadcast to ``shape`` without changing it, with finite values (a baseline or
    fill image for inputs of that shape); returns it."""
    fits = False
    if isinstance(t, torch.Tensor):
        try:
            fits = torch.broadcast_shapes(t.shape, shape) == tuple(shape)
        except RuntimeError:  # shapes that do not broadcast at all
            fits = False
    if not fits:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name}: expected a tensor broadcastable to {tuple(shape)}, got {got}")
    check_finite(t.detach(), name)
    return t


def check_finite_floats(value: Any, path: str) -> None:
    """Refuse any NaN or infinite float in a nested value (dataclasses, mappings, lists and tuples, searched
    recursively), naming its dotted key path after ``path`` (e.g. a config's ``optim.lr``)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            check_finite_floats(getattr(value, f.name), f"{path}.{f.name}" if path else f.name)
    elif isinstance(value, dict):
        for key, item in value.items():
            check_finite_floats(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            check_finite_floats(item, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{path}: expected a finite number, got {value!r}")


def check_labels(y: object, n: int, num_classes: int | None = None, name: str = "y") -> torch.Tensor:
    """Validate labels: int64 tensor ``(n,)`` with values in ``[0, num_classes)``."""
    if not isinstance(y, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor of shape ({n},), got {type(y).__name__}")
    check_data_device(y, name)
    if y.dtype != torch.int64:
        raise ValueError(f"{name}: expected dtype torch.int64, got {y.dtype}")
    if tuple(y.shape) != (n,):
        raise ValueError(f"{name}: expected shape ({n},), got {tuple(y.shape)}")
    if n and int(y.min()) < 0:
        raise ValueError(f"{name}: expected labels >= 0, got minimum {int(y.min())}")
    if n and num_classes is not None and int(y.max()) >= num_classes:
        raise ValueError(
            f"{name}: expected labels in [0, {num_classes}), got maximum {int(y.max())} "
            f"for a model with {num_classes} outputs"
        )
    return y


def check_model_batch(model: object, x: object, y: object) -> None:
    """Validate a classifier and a labelled batch: an ``nn.Module``, images ``x`` as :func:`check_images`, labels
    ``y`` int64 ``(N,)`` on ``x``'s device, ``x`` of the model's dtype (:func:`check_model_input`)."""
    check_images(x)
    check_model_input(model, x)
    check_labels(y, x.shape[0])
    if y.device != x.device:
        raise ValueError(f"x, y: expected tensors on the same device, got {x.device} and {y.device}")


def check_positive(value: float, name: str, *, allow_zero: bool = False) -> float:
    """Validate a positive (or non-negative) finite scalar option."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value or value in (float("inf"), float("-inf")):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name}: expected a finite value {bound}, got {value!r}")
    return value


def check_int(value: object, name: str, minimum: int = 1) -> int:
    """Validate an integer option (bools refused) that must be at least ``minimum``."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return value


def check_generator(generator: object, name: str = "generator") -> torch.Generator | None:
    """Validate a random-number source: ``None`` (torch's global RNG) or a ``torch.Generator`` (``TypeError``
    otherwise, e.g. a bare seed: pass ``torch.Generator().manual_seed(seed)``). Returns it."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"{name}: expected a torch.Generator or None (for a seed: torch.Generator().manual_seed(seed)), "
            f"got {type(generator).__name__} {generator!r}"
        )
    return generator


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    """Validate that ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_k(k: int, n: int, name: str = "k") -> int:
    """Validate a top-k size against the number of features ``n``."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1 or k > n:
        raise ValueError(f"{name}: expected an integer in [1, {n}] (the number of features), got {k!r}")
    return k


def check_same_shape(a: torch.Tensor, b: torch.Tensor, names: str = "a, b") -> None:
    """Validate that two tensors have the same shape."""
    if a.shape != b.shape:
        raise ValueError(f"{names}: expected equal shapes, got {tuple(a.shape)} and {tuple(b.shape)}")


def check_logits(out: object, n: int) -> torch.Tensor:
    """Validate model output: logits ``(n, K)`` (``TypeError`` for a non-tensor, ``ValueError`` for another shape);
    warns once (:func:`warn_if_probabilities`) when they look like probabilities."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"model output: expected a tensor of logits ({n}, K), got {type(out).__name__}")
    check_data_device(out, "model output")
    if out.dim() != 2 or out.shape[0] != n:
        raise ValueError(f"model output: expected logits of shape ({n}, K), got {tuple(out.shape)}")
    warn_if_probabilities(out)
    return out


PROBABILITIES_WARNING = (
    "model outputs sum to 1 and are non-negative: they look like probabilities; attrobust expects logits "
    "(remove the final softmax)"
)


def warn_if_probabilities(out: torch.Tensor) -> None:
    """Warn once when model outputs ``(N, K)`` are non-negative rows summing to 1 (probabilities, not logits): the
    one warning every attribution, attack, metric and evaluation gives for such a model."""
    if PROBABILITIES_WARNING in _WARNED or not out.numel() or not out.is_floating_point():
        return
    rows = out.detach()
    if bool((rows >= 0).all()) and bool(torch.allclose(rows.sum(1), rows.new_ones(rows.shape[0]), atol=1e-4)):
        warn_once(PROBABILITIES_WARNING)


def check_model_input(model: object, x: object, name: str = "x") -> nn.Module:
    """Validate a classifier and its input batch ``x`` ``(N, C, H, W)``: ``model`` is an ``nn.Module`` and ``x``
    has the dtype of the model's floating-point parameters (float64 images into a float32 model are refused);
    ``ValueError`` otherwise. Returns ``model``."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    ref = next((p for p in model.parameters() if p.is_floating_point()), None)
    if (
        ref is not None and isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != ref.dtype
        and not torch.is_autocast_enabled(x.device.type)  # autocast casts every input itself
    ):  # fmt: skip
        raise ValueError(
            f"{name}: expected dtype {ref.dtype} (the dtype of the model's parameters), got {x.dtype}; "
            f"convert with {name}.to({ref.dtype})"
        )
    return model


# Messages of torch's shape and dtype mismatches inside a forward pass (conv channels, linear sizes, pooling).
# (Other errors, e.g. autograd's "modified by an inplace operation ... expected version", pass unchanged.)
_INPUT_MISMATCH = re.compile(r"shape|size|channels|dtype|should be the same|must have the same", re.IGNORECASE)


@contextmanager
def model_input_errors(model: nn.Module, x: torch.Tensor, name: str = "x") -> Iterator[None]:
    """Turn a shape or dtype mismatch raised by a forward pass of ``model`` inside the block (an image of another
    size or channel count than the model was built for) into a ``ValueError`` naming ``x``'s shape and the model's
    declared input (``model.spec``, when it has one), chained to torch's error; any other exception passes."""
    try:
        yield
    except RuntimeError as err:
        if isinstance(err, torch.OutOfMemoryError) or not _INPUT_MISMATCH.search(str(err)):
            raise
        spec = getattr(model, "spec", None)
        wanted = "an input the model accepts"
        if isinstance(spec, dict) and {"in_channels", "input_size"} <= set(spec):
            wanted = f"images (N, {spec['in_channels']}, {spec['input_size']}, {spec['input_size']}) (the model's spec)"
        first = str(err).strip().splitlines()[0]
        raise ValueError(f"{name}: expected {wanted}, got shape {tuple(x.shape)}; the model raised: {first}") from err


def model_logits(model: nn.Module, x: torch.Tensor, name: str = "x") -> torch.Tensor:
    """``model(x)`` checked: :func:`check_model_input` first, the forward pass inside :func:`model_input_errors`,
    and the output validated as logits ``(N, K)`` by :func:`check_logits` (probabilities warn once)."""
    check_model_input(model, x, name)
    with model_input_errors(model, x, name):
        out = model(x)
    return check_logits(out, x.shape[0])


def warn_if_training(model: nn.Module) -> None:
    """Warn once when a model is evaluated in train mode (dropout/batch-norm change the result)."""
    if model.training:
        warn_once(
            f"{type(model).__name__} is in train mode during evaluation; call model.eval() first "
            "(in train mode batch norm and dropout make predictions and attacks depend on the batch; attributions "
            "always use eval-mode normalisation)"
        )


def has_relu(model: nn.Module) -> bool:
    """True when the model contains ``nn.ReLU`` modules (second derivatives of ReLU nets vanish)."""
    return any(isinstance(m, nn.ReLU) for m in model.modules())


def check_second_order(model: nn.Module, beta: float | None, what: str) -> None:
    """A method needing second derivatives must get a softplus ``beta`` when the model uses ReLU."""
    if beta is None and has_relu(model):
        raise ValueError(
            f"{what}: needs second derivatives, but the model uses ReLU (second derivative 0 almost everywhere); "
            "expected beta=<float> (e.g. 10.0) so a softplus(beta) copy is used, got beta=None"
        )
