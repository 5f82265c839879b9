"""Gradient-based attributions: saliency, input x gradient, integrated gradients.

Tensor contract: images ``x`` are float ``(N, C, H, W)`` in [0, 1]; ``target`` is int64 ``(N,)`` (or one int for
all examples); every function returns a tensor of the input's shape. With ``create_graph=True`` the result is
differentiable w.r.t. both the input and the parameters (for second-order methods use a smooth model, e.g.
``attrobust.models.softplus(model, beta)``: second derivatives of ReLU networks vanish almost everywhere).
Attributions never change ``model.training`` or any ``requires_grad`` flag.

Per example: every function runs with the model's normalisation and dropout layers in eval behaviour
(``attrobust.models.eval_norm``: BatchNorm with its running statistics, dropout off), so a map never depends on
the other examples of its batch and no buffer (running statistics, ``num_batches_tracked``) is ever written. On
a model whose such layers are in train mode the result is that of the eval-mode layers, and a warning (once)
names ``model.eval()``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.utils.checkpoint
from torch import nn

from .._checks import check_broadcastable, check_choice, check_int, check_labels
from ..models.modes import eval_norm
from ..models.normalize import Normalize
from ._grad import gradient, per_example, range_checked, unchecked
from .registry import ATTRIBUTIONS

IG_RULES = ("right", "left", "middle", "trapezoid", "gausslegendre")

# Modules that are affine maps of their input, per example (BatchNorm2d only in eval mode: see _is_affine).
_AFFINE_TYPES = (
    Normalize, nn.Conv2d, nn.Linear, nn.Flatten, nn.Identity, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.ZeroPad2d,
)


def as_target(target: torch.Tensor | int, x: torch.Tensor) -> torch.Tensor:
    """Validate ``target`` for a batch ``x``: an int (same class for all) or int64 ``(N,)`` -> int64 ``(N,)``."""
    if isinstance(target, int) and not isinstance(target, bool):
        target = torch.full((x.shape[0],), target, dtype=torch.int64, device=x.device)
    return check_labels(target, x.shape[0], name="target")


def as_baseline(baseline: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """Validate an IG baseline for ``x`` ``(N, C, H, W)``: ``None`` -> zeros; else a tensor broadcastable to ``x``
    with finite values (a NaN or infinite baseline would make every path point, and so the map, NaN)."""
    if baseline is None:
        return torch.zeros_like(x)
    return check_broadcastable(baseline, x.shape, "baseline")


@ATTRIBUTIONS.register("saliency")
@range_checked
@per_example
def saliency(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *, create_graph: bool = False, output: str = "logit"
) -> torch.Tensor:
    """Simple gradient (Simonyan et al. 2014): ``d f_target(x) / d x``, shape ``(N, C, H, W)``.

    The raw signed gradient is returned; ranking metrics take ``|a|`` summed over channels
    (``attrobust.metrics.saliency_map``). ``output`` picks the target scalar: ``"logit"`` (default),
    ``"probability"`` or ``"loss"``.
    """
    return gradient(model, x, as_target(target, x), create_graph=create_graph, output=output)


@ATTRIBUTIONS.register("input_x_gradient")
@range_checked
@per_example
def input_x_gradient(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *, create_graph: bool = False, output: str = "logit"
) -> torch.Tensor:
    """Input x gradient (Shrikumar et al. 2016): ``x * d f_target(x) / d x``, shape ``(N, C, H, W)``."""
    return x * unchecked(saliency)(model, x, target, create_graph=create_graph, output=output)


def ig_alphas(steps: int, rule: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Path positions and quadrature weights of a ``steps``-point rule on [0, 1], each shape ``(steps,)``, float64.

    ``right``: alpha_k = k/m (k = 1..m), ``left``: (k-1)/m, ``middle``: (k-1/2)/m, each with weight 1/m;
    ``trapezoid``: alpha_k = k/(m-1) (k = 0..m-1), weight 1/(m-1) with the two ends halved (weights sum to 1;
    needs m >= 2); ``gausslegendre``: the m-point Gauss-Legendre nodes and weights mapped from [-1, 1] to [0, 1]
    (``numpy.polynomial.legendre.leggauss``, nodes ascending; exact for polynomials of degree <= 2m - 1).
    ``right`` (the source papers' rule and this library's default), ``left``, ``middle`` and ``gausslegendre`` are
    Captum's ``IntegratedGradients`` methods ``riemann_right``, ``riemann_left``, ``riemann_middle`` and
    ``gausslegendre`` (Captum's default: quote the rule with any comparison). ``trapezoid`` is the textbook rule,
    not Captum's ``riemann_trapezoid``, whose weights are 1/m with the ends halved (they sum to (m-1)/m, so its
    attributions are ours times (m-1)/m).
    """
    check_choice(rule, "rule", IG_RULES)
    min_steps = 2 if rule == "trapezoid" else 1
    check_int(steps, f"steps (rule {rule!r})", min_steps)
    m = steps
    if rule == "gausslegendre":
        nodes, node_weights = np.polynomial.legendre.leggauss(m)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * node_weights)
    k = torch.arange(m, dtype=torch.float64)
    if rule == "trapezoid":
        alphas = k / (m - 1)
        weights = torch.full((m,), 1.0 / (m - 1), dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / (m - 1)
        return alphas, weights
    offset = {"right": 1.0, "left": 0.0, "middle": 0.5}[rule]
    return (k + offset) / m, torch.full((m,), 1.0 / m, dtype=torch.float64)


@ATTRIBUTIONS.register("integrated_gradients")
@range_checked
@per_example
def integrated_gradients(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *,
    baseline: torch.Tensor | None = None, steps: int = 50, rule: str = "right", create_graph: bool = False,
    batch_steps: int | None = None, output: str = "logit", checkpoint: bool = False, affine_prefix: bool | None = None,
) -> torch.Tensor:
    """Integrated Gradients (Sundararajan et al. 2017), shape ``(N, C, H, W)``.

    ``IG(x) = (x - x0) * sum_k w_k grad f_target(x0 + alpha_k (x - x0))`` with ``(alpha_k, w_k)`` from
    :func:`ig_alphas` (``rule`` = ``right`` Riemann sum by default, as in the source papers' code; Captum's default
    is ``gausslegendre``, available here under that name). ``baseline`` ``x0`` defaults to zeros (black image); any
    finite tensor broadcastable to ``x`` is accepted. The path points are
    evaluated ``batch_steps`` at a time (``batch_steps * N`` images per forward pass; ``None`` picks one step per
    pass, the fastest on small CPUs; see ``benchmarks/``), so memory stays bounded without ``create_graph``.
    ``sum(IG) ~= f(x) - f(x0)`` (completeness) with an error that shrinks as ``steps`` grows.

    With ``create_graph=True`` the graph of every path point is kept for the caller's backward pass, so memory
    grows with ``steps * N``; ``checkpoint=True`` keeps only each chunk's inputs and recomputes the chunk's
    forward and first backward during the caller's backward (activation checkpointing), which bounds the memory
    by one chunk at the cost of that recomputation. Values and gradients are the same either way.

    ``affine_prefix=True`` evaluates the model's leading affine layers (see :func:`affine_split`: e.g.
    ``Normalize`` and the first convolution of every registered plain net) twice per call instead of once per
    path point: an affine map ``h`` sends the straight path to the straight path between ``h(x0)`` and ``h(x)``
    and has a constant Jacobian ``J``, so ``sum_k w_k J^T g_k = J^T (sum_k w_k g_k)`` takes one backward pass
    through ``h``. Exact up to float rounding (values and gradients equal those of ``affine_prefix=False`` to
    1e-12 in float64, tested); models that are not a plain ``nn.Sequential`` chain, or have hooks there, take the
    plain path. ``None`` (default) uses it unless ``checkpoint`` and ``create_graph`` are both set: the points
    then live in the prefix's output space (32 channels instead of 1 for ``mnist_cnn``), the same tensor memory
    but more large short-lived buffers, which fragment the CPU heap (peak RSS 128 x 50 steps: 1.9 GiB instead of
    0.36 GiB with glibc's default allocator; ``benchmarks/bench_ig_memory.py``).
    """
    target = as_target(target, x)
    baseline = as_baseline(baseline, x)
    alphas, weights = ig_alphas(steps, rule)
    chunk = 1 if batch_steps is None else int(batch_steps)
    if chunk < 1:
        raise ValueError(f"batch_steps: expected an integer >= 1 or None, got {batch_steps!r}")
    if not isinstance(checkpoint, bool):
        raise ValueError(f"checkpoint: expected a bool, got {checkpoint!r}")
    if affine_prefix is None:
        affine_prefix = not (checkpoint and create_graph)
    if not isinstance(affine_prefix, bool):
        raise ValueError(f"affine_prefix: expected a bool or None, got {affine_prefix!r}")
    path = _Path(alphas, weights, chunk, create_graph, output, checkpoint)
    return _integrate(model, x, target, baseline, path, affine_prefix)


ATTRIBUTIONS.register("ig")(integrated_gradients)


@dataclass(frozen=True)
class _Path:
    """How :func:`integrated_gradients` sums along its path: positions and weights ``(m,)`` float64 of
    :func:`ig_alphas`, ``chunk`` points per forward pass, whether to keep the graph, the target output kind, and
    whether to checkpoint each chunk (with ``create_graph``)."""

    alphas: torch.Tensor
    weights: torch.Tensor
    chunk: int
    create_graph: bool
    output: str
    checkpoint: bool


def _leaves(module: nn.Module) -> list[nn.Module] | None:
    """The modules a plain ``nn.Sequential`` chain runs, nested chains flattened; ``None`` if hooks could fire."""
    if type(module) is not nn.Sequential:
        return [module]
    if _has_hooks(module):
        return None
    out: list[nn.Module] = []
    for child in module:
        sub = _leaves(child)
        if sub is None:
            return None
        out += sub
    return out


def _has_hooks(module: nn.Module) -> bool:
    names = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
    return any(getattr(module, name, None) for name in names)


def _is_affine(module: nn.Module) -> bool:
    """Whether ``module`` is an affine map of its input (per example) with no hooks: exact types only, since a
    subclass (or a parametrized module) may compute something else."""
    if _has_hooks(module):
        return False
    if type(module) is nn.BatchNorm2d:  # affine only with running statistics (subclasses may differ)
        return not module.training and module.running_mean is not None
    return type(module) in _AFFINE_TYPES


def affine_split(model: nn.Module) -> tuple[nn.Sequential, nn.Sequential] | None:
    """Split ``model`` into its leading affine layers and the rest, or ``None`` when that saves nothing.

    The model must be an ``nn.Sequential`` chain (nested chains allowed) without hooks; the prefix is the
    longest run of affine modules (``Normalize``, ``Conv2d``, ``Linear``, ``Flatten``, ``Identity``, average
    pooling, ``BatchNorm2d`` in eval mode) from the start, and must hold a convolution or linear layer. Returns
    ``(prefix, rest)`` sharing the model's modules, with ``rest(prefix(x)) == model(x)``.
    """
    if torch.nn.modules.module._global_forward_hooks or torch.nn.modules.module._global_forward_pre_hooks:
        return None
    leaves = _leaves(model)
    if leaves is None or len(leaves) < 2:
        return None
    k = 0
    while k < len(leaves) - 1 and _is_affine(leaves[k]):
        k += 1
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) for m in leaves[:k]):
        return None
    return nn.Sequential(*leaves[:k]), nn.Sequential(*leaves[k:])


def _integrate(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    baseline: torch.Tensor,
    path: _Path,
    affine_prefix: bool,
) -> torch.Tensor:
    """Weighted sum of path gradients, ``path.chunk`` path points per forward pass (no input validation)."""
    split = affine_split(model) if affine_prefix else None
    delta = x - baseline
    if split is None:
        return delta * _path_sum(model, baseline, delta, target, path)
    create_graph = path.create_graph
    prefix, rest = split
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        h_leaf = prefix(leaf)
        h_x = prefix(x) if create_graph else h_leaf.detach()
        h_0 = prefix(baseline.expand_as(x))
        if not create_graph:
            h_0 = h_0.detach()
        total_h = _path_sum(rest, h_0, h_x - h_0, target, path)
        (total,) = torch.autograd.grad(h_leaf, leaf, total_h, create_graph=create_graph)
    return delta * (total if create_graph else total.detach())


def _path_sum(
    model: nn.Module, baseline: torch.Tensor, delta: torch.Tensor, target: torch.Tensor, path: _Path
) -> torch.Tensor:
    """``sum_k w_k grad f_target(x0 + alpha_k delta)`` with ``x0 = baseline``, ``delta = x - x0`` of any shape
    ``(N, ...)`` (``baseline`` broadcastable to it); returns that shape."""
    create_graph, output, chunk = path.create_graph, path.output, path.chunk
    scalar_alphas = path.alphas.to(delta.dtype).tolist()  # exactly the values the tensors below hold
    alphas = path.alphas.to(device=delta.device, dtype=delta.dtype)
    weights = path.weights.to(device=delta.device, dtype=delta.dtype)
    scalar_weights = weights.tolist()
    total = torch.zeros_like(delta)
    view = (-1,) + (1,) * delta.dim()
    m = alphas.numel()
    for start in range(0, m, chunk):
        c = min(chunk, m - start)
        a = scalar_alphas[start] if c == 1 else alphas[start : start + c]
        targets = target.repeat(c)
        if path.checkpoint and create_graph:
            # The points are rebuilt inside, so the checkpoint keeps only (baseline, delta, a), shared by all chunks.
            points = functools.partial(_point_gradients, model, output=output, create_graph=True)
            grads = torch.utils.checkpoint.checkpoint(
                functools.partial(_in_eval_norm, model, points), baseline, delta, a, targets, use_reentrant=False
            )
        else:
            grads = _point_gradients(model, baseline, delta, a, targets, output=output, create_graph=create_graph)
        if c > 1:
            total = total + (grads.view(c, *delta.shape) * weights[start : start + c].view(view)).sum(0)
        elif create_graph:  # one temporary per point: fewer short-lived buffers between the saved ones
            total = total.add(grads, alpha=scalar_weights[start])
        else:
            total.add_(grads, alpha=scalar_weights[start])
    return total


def _in_eval_norm(model: nn.Module, fn: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """``fn(*args)`` inside ``eval_norm(model)``: a checkpointed chunk is recomputed during the caller's backward
    pass, after the public function's ``eval_norm`` block has closed, so it enters one itself and recomputes
    exactly the forward pass it replaces (per-example normalisation, no buffer writes)."""
    with eval_norm(model):
        return fn(*args)


def _point_gradients(
    model: nn.Module,
    baseline: torch.Tensor,
    delta: torch.Tensor,
    a: torch.Tensor | float,
    targets: torch.Tensor,
    *,
    output: str,
    create_graph: bool,
) -> torch.Tensor:
    """Gradients at the path points ``baseline + a_k delta`` for the ``c`` positions ``a`` (a tensor ``(c,)`` or one
    float): ``(c * N, ...)``."""
    if isinstance(a, float):  # one position: one fused pass
        points = torch.add(baseline, delta, alpha=a)
    else:
        points = (baseline + a.view((-1,) + (1,) * delta.dim()) * delta).reshape(-1, *delta.shape[1:])
    if not create_graph:
        points = points.detach()
    return gradient(model, points, targets, create_graph=create_graph, output=output)
