"""Metric inputs as users hold them: torch tensors or numpy arrays, a batch ``(N, ...)`` or a single example.

:func:`accepts_arrays` wraps a metric whose positional inputs are maps, values, logits, labels or boxes (the
``pair``, ``map``, ``values``, ``logits``, ``boxes`` and ``boxes_top1`` kinds of :mod:`attrobust.metrics`): numpy
arrays become tensors (copied, same dtype, on the CPU; numpy and Python integer labels become int64),
and a single example (every input one dim short of its batched shape, e.g. two maps ``(D,)`` or two attributions
``(C, H, W)``, logits ``(K,)`` and an int label) is measured as a batch of one whose result is returned as a
0-dim tensor. Batched tensors pass through untouched, so results and gradients are those of the metric itself.
The shapes each input accepts, batched and single, are appended to the metric's docstring.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

# Per kind, per positional input: batched number of dims -> the shape it means.
KIND_SHAPES: dict[str, tuple[Mapping[int, str], ...]] = {
    "pair": ({2: "(N, D)", 4: "(N, C, H, W)"},) * 2,
    "spatial_pair": ({3: "(N, H, W)", 4: "(N, C, H, W)"},) * 2,
    "map": ({2: "(N, D)", 4: "(N, C, H, W)"},),
    "values": ({2: "(N, M)"},) * 2,
    "logits": ({2: "(N, K)"}, {1: "(N,)"}),
    "boxes": ({2: "(N, 4)"},) * 2,
    "boxes_top1": ({2: "(N, 4)"}, {2: "(N, 4)"}, {2: "(N, K)"}, {1: "(N,)"}),
}


def as_tensor(value: Any) -> Any:
    """A numpy array as a CPU tensor (a copy) of the same dtype and shape, a numpy integer scalar as an int64 0-dim
    tensor; anything else as given."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, order="C"))  # a copy: writable, contiguous, same dims
    if isinstance(value, np.integer):
        return torch.tensor(int(value), dtype=torch.int64)
    return value


def _single_shape(batched: str) -> str:
    """``"(N, C, H, W)"`` -> ``"(C, H, W)"``; ``"(N, D)"`` -> ``"(D,)"``; ``"(N,)"`` -> ``"()"``."""
    rest = batched[1:-1].split(", ")[1:]
    rest = [r for r in rest if r]
    return "(" + ", ".join(rest) + ("," if len(rest) == 1 else "") + ")"


def _is_single(inputs: list[Any], shapes: tuple[Mapping[int, str], ...]) -> bool:
    """Whether every input is one example: a tensor one dim short of a batched shape (an int label for 0 dims)."""
    for value, dims in zip(inputs, shapes, strict=False):
        ndim = value.dim() if isinstance(value, torch.Tensor) else 0 if isinstance(value, int) else None
        if ndim is None or ndim in dims or ndim + 1 not in dims:
            return False
    return True


def _batch_of_one(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.unsqueeze(0)
    return torch.tensor([value], dtype=torch.int64)


def _shapes_doc(kind: str) -> str:
    """The docstring paragraph listing the shapes a metric of ``kind`` accepts."""
    lines = ["", "", "    Inputs (as ``attrobust.metrics.<name>``): tensors or numpy arrays, batched or one example:"]
    for i, dims in enumerate(KIND_SHAPES[kind]):
        batched = " or ".join(dims.values())
        single = " or ".join(_single_shape(s) for s in dims.values())
        lines.append(f"    input {i + 1}: batched {batched}, single {single};")
    lines.append("    a single example (every input one dim short) gives a 0-dim result, a batch one per example.")
    return "\n".join(lines) + "\n"


def accepts_arrays(fn: Callable[..., Any], kind: str) -> Callable[..., Any]:
    """``fn(*inputs, **options)`` (a metric of ``kind``, a key of :data:`KIND_SHAPES`) that also takes numpy arrays
    and a single example; see the module docstring. Positional arguments past the kind's inputs pass as given."""
    shapes = KIND_SHAPES[kind]

    @functools.wraps(fn)
    def metric(*args: Any, **options: Any) -> Any:
        inputs = [as_tensor(v) for v in args[: len(shapes)]]
        rest = args[len(shapes) :]
        if len(inputs) == len(shapes) and _is_single(inputs, shapes):
            return fn(*(_batch_of_one(v) for v in inputs), *rest, **options)[0]
        return fn(*inputs, *rest, **options)

    metric.__doc__ = (fn.__doc__ or "").rstrip() + _shapes_doc(kind)
    return metric


__all__ = ["KIND_SHAPES", "accepts_arrays", "as_tensor"]
