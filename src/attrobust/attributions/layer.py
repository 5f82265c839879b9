"""Attributions of an intermediate layer: layer addressing, activation hooks and layer Integrated Gradients.

Tensor contract: images ``x`` are float ``(N, C, H, W)`` in [0, 1]; ``target`` is int64 ``(N,)`` (or one int for
all examples). A layer is given by its dotted name (``"layer4"``, ``"features.3"``; see
``nn.Module.get_submodule``) or as the module itself; it must return one tensor ``(N, ...)``. Hooks are always
removed (``finally``). Attributions never change ``model.training`` or any ``requires_grad`` flag; they run
per example, with normalisation and dropout layers in eval behaviour, and never write a buffer (see
:mod:`attrobust.attributions.gradients`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from .._checks import check_choice, check_images
from ._grad import grad_of, per_example, target_output
from .gradients import as_baseline, as_target, ig_alphas
from .registry import ATTRIBUTIONS


def last_feature_layer(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The last leaf module, other than adaptive (global) pooling, whose output on ``x`` is 4-D ``(N, K, h, w)``
    (one extra forward pass without grad; the usual "last convolutional feature maps" of CAM methods)."""
    found: list[nn.Module] = []
    pools = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    leaves = [m for m in model.modules() if not list(m.children()) and not isinstance(m, pools)]
    handles = [
        m.register_forward_hook(lambda mod, _i, out: found.append(mod) if getattr(out, "ndim", 0) == 4 else None)
        for m in leaves
    ]
    try:
        with torch.no_grad():
            model(x.detach())
    finally:
        for h in handles:
            h.remove()
    if not found:
        raise ValueError("layer: expected the model to have a layer with (N, K, h, w) feature maps, found none")
    return found[-1]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> nn.Module:
    """The submodule ``layer`` of ``model``: a dotted name or a module that must belong to ``model``."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError(f"layer: expected a submodule of the model, got a foreign {type(layer).__name__}")
        return layer
    if not isinstance(layer, str):
        raise ValueError(f"layer: expected a dotted submodule name or an nn.Module, got {type(layer).__name__}")
    try:
        return model.get_submodule(layer)
    except AttributeError:
        names = ", ".join(repr(n) for n, _ in model.named_modules() if n) or "(none)"
        raise ValueError(f"layer: expected one of {names}, got {layer!r}") from None


@contextmanager
def replace_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """While active, ``module``'s output ``out`` is replaced by ``fn(out)`` (forward hook, removed on exit)."""

    def hook(_module: nn.Module, _inputs: object, out: object) -> torch.Tensor:
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"layer: expected a module returning one tensor, got {type(out).__name__}")
        return fn(out)

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def layer_forward(
    model: nn.Module, x: torch.Tensor, layer: str | nn.Module, *, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, K)`` and the layer's activation ``A`` ``(N, ...)``, with ``A`` differentiable.

    Without ``create_graph`` (or when ``A`` has no graph) ``A`` is a fresh leaf that requires grad, so
    ``grad_of(score, A)`` works for any model; with it, ``A`` keeps its graph to ``x`` and the parameters.
    """
    module = resolve_layer(model, layer)
    store: list[torch.Tensor] = []

    def keep(out: torch.Tensor) -> torch.Tensor:
        a = out if (create_graph and out.requires_grad) else out.detach().requires_grad_(True)
        store.append(a)
        return a

    with torch.enable_grad(), replace_output(module, keep):
        logits = model(x if create_graph else x.detach())
    if len(store) != 1:
        raise ValueError(f"layer: expected the layer to run once per forward pass, it ran {len(store)} times")
    return logits, store[0]


@ATTRIBUTIONS.register("layer_integrated_gradients")
@per_example
def layer_integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | int,
    *,
    layer: str | nn.Module,
    baseline: torch.Tensor | None = None,
    steps: int = 50,
    rule: str = "right",
    path: str = "layer",
    create_graph: bool = False,
    output: str = "logit",
) -> torch.Tensor:
    """Integrated Gradients of a layer's activation, shape of the LAYER's output ``(N, ...)``, not of ``x``.

    With ``h`` the layer, ``g`` the rest of the network (``f = g(h(.))``) and ``x0`` the input baseline (zeros
    by default; any tensor broadcastable to ``x``): ``LIG(x) = (h(x) - h(x0)) * sum_k w_k grad g_target(h(x0) +
    alpha_k (h(x) - h(x0)))`` with ``(alpha_k, w_k)`` from :func:`ig_alphas` (``right`` Riemann rule by
    default). This is ``path="layer"``, Captum's ``LayerIntegratedGradients`` (a straight path in the layer's
    activation space); each step is one forward pass of ``N`` images whose layer output is replaced by the path
    point.

    ``path="input"`` is RAR appendix B.2 (eq. 8-9): the curve ``gamma(t) = h(x0 + t (x - x0))`` that the earlier
    layers induce, integrated as the Riemann-Stieltjes sum ``sum_k grad g_target(gamma(a_k)) * (gamma(t_k) -
    gamma(t_{k-1}))`` with ``t_k = k/m`` and ``a_k = t_k`` (``rule="right"``) or ``t_{k-1}`` (``"left"``, RAR's
    eq. 9 and Captum's ``LayerConductance`` with ``method="riemann_trapezoid"``); only these two rules apply.
    Both paths share their end points, so both satisfy completeness ``sum(LIG) ~= f(x) - f(x0)``.
    """
    check_images(x)
    target = as_target(target, x)
    baseline = as_baseline(baseline, x)
    check_choice(path, "path", ("layer", "input"))
    alphas, weights = ig_alphas(steps, rule)
    module = resolve_layer(model, layer)
    if path == "input":
        if rule not in ("right", "left"):
            raise ValueError(f"rule: expected 'right' or 'left' for path='input', got {rule!r}")
        return _conductance(model, x, baseline, _Scores(module, target, output, create_graph), steps, rule)
    both = torch.cat([x, baseline.expand_as(x)])
    _, acts = layer_forward(model, both, module, create_graph=create_graph)
    h, h0 = acts[: x.shape[0]], acts[x.shape[0] :]
    if not create_graph:
        h, h0 = h.detach(), h0.detach()
    delta = h - h0
    total = torch.zeros_like(h)
    for a, w in zip(alphas.tolist(), weights.tolist(), strict=True):
        point = h0 + a * delta
        point = point if create_graph and point.requires_grad else point.detach().requires_grad_(True)
        with torch.enable_grad(), replace_output(module, lambda _out, p=point: p):
            score = target_output(model(x if create_graph else x.detach()), target, output)
        total = total + w * grad_of(score.sum(), point, create_graph=create_graph)
    return delta * total


@dataclass(frozen=True)
class _Scores:
    """What each point of :func:`_conductance` differentiates: the ``target`` output (kind ``output``) w.r.t. the
    activation of ``module``, keeping the graph or not."""

    module: nn.Module
    target: torch.Tensor
    output: str
    create_graph: bool


def _conductance(
    model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, scores: _Scores, steps: int, rule: str
) -> torch.Tensor:
    """RAR B.2 sum along ``h(x0 + t (x - x0))`` (see :func:`layer_integrated_gradients`, ``path="input"``)."""
    create_graph = scores.create_graph
    delta = x - baseline
    previous = None
    total = None
    for k in range(steps + 1):
        point = baseline + (k / steps) * delta
        logits, act = layer_forward(model, point, scores.module, create_graph=create_graph)
        with torch.enable_grad():
            out = target_output(logits, scores.target, scores.output)
            grad = grad_of(out.sum(), act, create_graph=create_graph)
        act = act if create_graph else act.detach()
        if previous is not None:
            step = act - previous[0]
            term = (grad if rule == "right" else previous[1]) * step
            total = term if total is None else total + term
        previous = (act, grad)
    return total
