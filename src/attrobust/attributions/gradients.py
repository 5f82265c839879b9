"""Gradient-based attributions: saliency, input x gradient, integrated gradients.

Tensor contract: images ``x`` are float ``(N, C, H, W)`` in [0, 1]; ``target`` is int64 ``(N,)`` (or one int for
all examples); every function returns a tensor of the input's shape. With ``create_graph=True`` the result is
differentiable w.r.t. both the input and the parameters (for second-order methods use a smooth model, e.g.
``attrobust.models.softplus(model, beta)``: second derivatives of ReLU networks vanish almost everywhere).
Attributions never change ``model.training`` or any ``requires_grad`` flag.
"""

from __future__ import annotations

import functools

import torch
import torch.utils.checkpoint
from torch import nn

from .._checks import check_choice, check_images, check_int, check_labels
from ._grad import gradient

IG_RULES = ("right", "left", "middle", "trapezoid")


def as_target(target: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """Validate ``target`` for a batch ``x``: an int (same class for all) or int64 ``(N,)`` -> int64 ``(N,)``."""
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((x.shape[0],), target, dtype=torch.int64, device=x.device)
    return check_labels(target, x.shape[0], name="target")


def as_baseline(baseline: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Validate an IG baseline for ``x`` ``(N, C, H, W)``: ``None`` -> zeros; else a tensor broadcastable to ``x``."""
    if baseline is None:
        return torch.zeros_like(x)
    if not isinstance(baseline, torch.Tensor) or torch.broadcast_shapes(baseline.shape, x.shape) != x.shape:
        got = tuple(baseline.shape) if isinstance(baseline, torch.Tensor) else type(baseline).__name__
        raise ValueError(f"baseline: expected a tensor broadcastable to {tuple(x.shape)}, got {got}")
    return baseline


def saliency(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    *,
    create_graph: bool = False,
    output: str = "logit",
) -> torch.Tensor:
    """Simple gradient (Simonyan et al. 2014): ``d f_target(x) / d x``, shape ``(N, C, H, W)``.

    The raw signed gradient is returned; ranking metrics take ``|a|`` summed over channels
    (``attrobust.metrics.saliency_map``). ``output`` picks the target scalar: ``"logit"`` (default),
    ``"probability"`` or ``"loss"``.
    """
    check_images(x)
    return gradient(model, x, as_target(target, x), create_graph=create_graph, output=output)


def input_x_gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    *,
    create_graph: bool = False,
    output: str = "logit",
) -> torch.Tensor:
    """Input x gradient (Shrikumar et al. 2016): ``x * d f_target(x) / d x``, shape ``(N, C, H, W)``."""
    return x * saliency(model, x, target, create_graph=create_graph, output=output)


def ig_alphas(steps: int, rule: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Path positions and quadrature weights of a ``steps``-point rule on [0, 1], each shape ``(steps,)``.

    ``right``: alpha_k = k/m (k = 1..m), ``left``: (k-1)/m, ``middle``: (k-1/2)/m, each with weight 1/m;
    ``trapezoid``: alpha_k = k/(m-1) (k = 0..m-1), weight 1/(m-1) with the two ends halved (weights sum to 1;
    needs m >= 2).
    """
    check_choice(rule, "rule", IG_RULES)
    min_steps = 2 if rule == "trapezoid" else 1
    check_int(steps, f"steps (rule {rule!r})", min_steps)
    m = steps
    k = torch.arange(m, dtype=torch.float64)
    if rule == "trapezoid":
        alphas = k / (m - 1)
        weights = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (m - 1)
        return alphas, weights
    offset = {"right": 1.0, "left": 0.0, "middle": 0.5}[rule]
    return (k + offset) / m, torch.full((m,), 1.0 / m, dtype=torch.float64)


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    *,
    baseline: torch.Tensor | None = None,
    steps: int = 50,
    rule: str = "right",
    create_graph: bool = False,
    batch_steps: int | None = None,
    output: str = "logit",
    checkpoint: bool = False,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017), shape ``(N, C, H, W)``.

    ``IG(x) = (x - x0) * sum_k w_k grad f_target(x0 + alpha_k (x - x0))`` with ``(alpha_k, w_k)`` from
    :func:`ig_alphas` (``rule`` = ``right`` Riemann sum by default, as in the source papers' code). ``baseline``
    ``x0`` defaults to zeros (black image); any tensor broadcastable to ``x`` is accepted. The path points are
    evaluated ``batch_steps`` at a time (``batch_steps * N`` images per forward pass; ``None`` picks one step per
    pass, the fastest on small CPUs; see ``benchmarks/``), so memory stays bounded without ``create_graph``.
    ``sum(IG) ~= f(x) - f(x0)`` (completeness) with an error that shrinks as ``steps`` grows.

    With ``create_graph=True`` the graph of every path point is kept for the caller's backward pass, so memory
    grows with ``steps * N``; ``checkpoint=True`` keeps only each chunk's inputs and recomputes the chunk's
    forward and first backward during the caller's backward (activation checkpointing), which bounds the memory
    by one chunk at the cost of that recomputation. Values and gradients are the same either way.
    """
    check_images(x)
    target = as_target(target, x)
    baseline = as_baseline(baseline, x)
    alphas, weights = ig_alphas(steps, rule)
    chunk = 1 if batch_steps is None else int(batch_steps)
    if chunk < 1:
        raise ValueError(f"batch_steps: expected an integer >= 1 or None, got {batch_steps!r}")
    if not isinstance(checkpoint, bool):
        raise ValueError(f"checkpoint: expected a bool, got {checkpoint!r}")
    return _integrate(model, x, target, baseline, alphas, weights, chunk, create_graph, output, checkpoint)


def _integrate(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor,
    alphas: torch.Tensor,
    weights: torch.Tensor,
    chunk: int,
    create_graph: bool,
    output: str,
    checkpoint: bool = False,
) -> torch.Tensor:
    """Weighted sum of path gradients, ``chunk`` path points per forward pass (no input validation)."""
    n = x.shape[0]
    delta = x - baseline
    alphas = alphas.to(device=x.device, dtype=x.dtype)
    weights = weights.to(device=x.device, dtype=x.dtype)
    total = torch.zeros_like(x)
    for start in range(0, alphas.numel(), chunk):
        a = alphas[start : start + chunk]
        w = weights[start : start + chunk]
        c = a.numel()
        points = (baseline + a.view(c, 1, 1, 1, 1) * delta).reshape(c * n, *x.shape[1:])
        if not create_graph:
            points = points.detach()
        targets = target.repeat(c)
        if checkpoint and create_graph:
            grads = torch.utils.checkpoint.checkpoint(
                functools.partial(gradient, model, create_graph=True, output=output), points, targets,
                use_reentrant=False,
            )  # fmt: skip
        else:
            grads = gradient(model, points, targets, create_graph=create_graph, output=output)
        total = total + (grads.view(c, *x.shape) * w.view(c, 1, 1, 1, 1)).sum(0)
    return delta * total
