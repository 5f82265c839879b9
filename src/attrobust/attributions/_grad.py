"""The one place that calls ``torch.autograd.grad``.

Every attribution, attack and objective that needs a gradient goes through :func:`gradient` (gradients of a
model's per-example target outputs w.r.t. its input) or :func:`grad_of` (gradient of any scalar). Both decide in
one spot whether the result keeps its graph (``create_graph=True``: differentiable w.r.t. the input and the
parameters, as needed by IG-NORM, ART, IGR and every attribution attack) or is detached.

:func:`per_example` wraps every public attribution function: the map is computed with the model's normalisation
and dropout layers in eval behaviour (``attrobust.models.eval_norm``), so it never depends on the rest of the
batch and never changes a buffer; on a model whose such layers are in train mode it warns once, naming
``model.eval()``. :func:`range_checked` wraps those whose input must be an image batch in [0, 1] and keeps the
unchecked function reachable through :func:`unchecked`, for the callers that evaluate them on points outside
[0, 1] on purpose (SmoothGrad's unclamped noisy copies, the bounds' ``x + eps v``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_choice,
    check_images,
    check_labels,
    check_logits,
    check_model_input,
    model_input_errors,
    warn_once,
)
from ..models.modes import eval_norm

TARGET_KINDS = ("logit", "probability", "loss")

AttributionFn = Callable[..., torch.Tensor]


def per_example(fn: AttributionFn) -> AttributionFn:
    """Wrap an attribution ``fn(model, x, target, **options)`` so that it runs inside ``eval_norm(model)``.

    When that switched layers (the model had BatchNorm, InstanceNorm with running statistics or dropout in train
    mode) a warning is issued once per model class and layer kinds: the result is the per-example attribution,
    i.e. that of the model with those layers in eval mode, and no buffer was written. Objectives, metrics and
    attacks that mean to compute attributions of a train-mode model enter ``eval_norm`` themselves, so the
    warning does not fire there. Neither ``model.training`` (of any submodule) nor any buffer changes. An input the
    model cannot take (another image size or channel count) raises ``ValueError`` naming ``x``'s shape
    (``attrobust._checks.model_input_errors``).
    """

    @functools.wraps(fn)
    def wrapper(model: nn.Module, x: torch.Tensor, target: Any, *args: Any, **options: Any) -> torch.Tensor:
        check_model_input(model, x)
        with eval_norm(model) as switched:
            if switched:
                kinds = ", ".join(sorted({type(m).__name__ for m in switched}))
                warn_once(
                    f"{type(model).__name__} has {kinds} layers in train mode: attributions are computed with "
                    "them in eval mode (batch norm with its running statistics, no dropout, buffers untouched) so "
                    "that each example's map is independent of its batch; call model.eval() first (or compute "
                    "inside attrobust.models.eval_norm(model)) to make this explicit"
                )
            with model_input_errors(model, x):
                return fn(model, x, target, *args, **options)

    return wrapper


# Public attribution -> the same function without the [0, 1] check (filled by ``range_checked`` at import).
_UNCHECKED: dict[AttributionFn, AttributionFn] = {}


def range_checked(fn: AttributionFn) -> AttributionFn:
    """Wrap an attribution ``fn(model, x, target, **options)`` so that ``x`` is validated first with
    ``check_images`` (float ``(N, C, H, W)``, finite, in [0, 1]); ``unchecked(wrapper)`` gives back ``fn``."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, x: torch.Tensor, target: Any, *args: Any, **options: Any) -> torch.Tensor:
        check_images(x)
        return fn(model, x, target, *args, **options)

    _UNCHECKED[wrapper] = fn
    return wrapper


def unchecked(fn: AttributionFn) -> AttributionFn | None:
    """The version of a :func:`range_checked` attribution that accepts any finite points (same values on [0, 1]),
    or ``None`` for a function without one."""
    return _UNCHECKED.get(fn)


def grad_of(
    output: torch.Tensor, inputs: torch.Tensor, *, create_graph: bool = False, retain_graph: bool | None = None
) -> torch.Tensor:
    """Gradient of the scalar ``output`` w.r.t. ``inputs`` (same shape as ``inputs``).

    With ``create_graph=False`` the result is detached; unused inputs give zeros instead of an error.
    ``retain_graph`` (default: ``create_graph``) keeps the graph of ``output`` for further gradients, e.g. several
    Hessian-vector products of one first-order gradient.
    """
    (g,) = torch.autograd.grad(
        output, inputs, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    if g is None:
        return torch.zeros_like(inputs)
    return g if create_graph else g.detach()


def target_output(logits: torch.Tensor, target: torch.Tensor, kind: str = "logit") -> torch.Tensor:
    """Per-example scalar whose input gradient is the attribution: ``(N, K)`` logits -> ``(N,)`` (other shapes
    raise ``ValueError``; probabilities instead of logits warn once).

    ``kind``: ``"logit"`` (the target class's logit, the papers' default), ``"probability"`` (its softmax
    probability) or ``"loss"`` (cross-entropy of the target class, as in IG-NORM's attribution of the loss).
    """
    check_choice(kind, "output", TARGET_KINDS)
    check_logits(logits, logits.shape[0] if isinstance(logits, torch.Tensor) and logits.dim() else 0)
    check_labels(target, logits.shape[0], logits.shape[1], name="target")
    if kind == "loss":
        return F.cross_entropy(logits, target, reduction="none")
    scores = F.softmax(logits, dim=1) if kind == "probability" else logits
    return scores.gather(1, target[:, None]).squeeze(1)


def gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    create_graph: bool = False,
    output: str = "logit",
) -> torch.Tensor:
    """Input gradient of each example's target output: ``(N, C, H, W) -> (N, C, H, W)``.

    Examples are independent (the model must not mix examples, i.e. be in eval mode or use no batch
    statistics), so the gradient of the sum is each example's gradient. ``x`` keeps its graph when
    ``create_graph=True`` and it requires grad, so the result is differentiable w.r.t. ``x`` and the parameters.
    Neither ``model.training`` nor any ``requires_grad`` flag is changed. ``x`` must have the model's dtype and
    the output must be logits ``(N, K)`` (``ValueError`` otherwise); probabilities instead of logits warn once.
    """
    with torch.enable_grad():
        xi = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        check_model_input(model, xi)
        out = target_output(model(xi), target, output)
        return grad_of(out.sum(), xi, create_graph=create_graph)
