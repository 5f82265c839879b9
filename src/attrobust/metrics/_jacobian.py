"""The attribution Jacobian of the bounds (:mod:`attrobust.metrics.bounds`): the attribution as a function of the
input with its graph, products with its Jacobian ``J = d g / d x``, and power iteration on ``J^T J``.

``J`` is never formed: ``J^T v`` is one backward pass through the attribution's graph, ``J v`` one more through
the graph of ``J^T u`` (or ``J^T v`` itself when ``J`` is symmetric, as for the simple gradient). All products
are batched over the examples of ``x`` ``(N, C, H, W)``, which do not interact (the attribution runs inside
``attrobust.models.eval_norm``). Imports: ``attrobust._checks``, ``attributions`` and ``models`` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from attrobust._checks import check_choice, check_model_batch, check_second_order, warn_if_training
from attrobust.attributions import TARGET_KINDS, explainer, ig_alphas
from attrobust.models import eval_norm, softplus

ATTRIBUTIONS = ("saliency", "input_x_gradient", "integrated_gradients")

AttributionFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SpectralNorm(NamedTuple):
    """Result of :func:`attrobust.metrics.bounds.attribution_spectral_norm`, one entry per example.

    ``xi_max`` ``(N,)``: estimate of the largest singular value of ``J = d g / d x`` (``||J v_max||_2``, a lower
    estimate that power iteration drives up to the true value); ``v_max`` ``(N, C, H, W)``: the unit right
    singular vector (``||v_max||_2 = 1`` per example); ``converged`` ``(N,)`` bool: the relative change of
    ``xi_max`` in the last iteration was at most ``tol``; ``iterations``: the number of iterations run.
    """

    xi_max: torch.Tensor
    v_max: torch.Tensor
    converged: torch.Tensor
    iterations: int


@dataclass(frozen=True)
class BoundAttribution:
    """The attribution ``g`` the bounds study: ``attribution`` (one of :data:`ATTRIBUTIONS`), the softplus
    ``beta`` of a smooth copy (``None``: the model itself), the ``output`` whose gradient is taken, and the path
    points and rule of integrated gradients (zero baseline)."""

    attribution: str = "saliency"
    beta: float | None = None
    output: str = "logit"
    ig_steps: int = 50
    ig_rule: str = "right"


def attribution_with_graph(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, spec: BoundAttribution, what: str
) -> tuple[AttributionFn, bool]:
    """Validate the common arguments; return ``fn(points, labels) -> g`` (with graph) and whether ``J`` is symmetric.

    ``fn`` accepts any finite points (not only [0, 1]: the bounds evaluate ``x + eps v``), keeps the graph
    (``create_graph=True``) and uses the softplus(``beta``) copy of ``model`` when ``beta`` is given. ``what``
    names the caller in the ReLU refusal.
    """
    check_model_batch(model, x, y)
    check_choice(spec.attribution, "attribution", ATTRIBUTIONS)
    check_choice(spec.output, "output", TARGET_KINDS)
    check_second_order(model, spec.beta, what)
    warn_if_training(model)
    net = model if spec.beta is None else softplus(model, spec.beta)
    ig = {}
    if spec.attribution == "integrated_gradients":
        ig_alphas(spec.ig_steps, spec.ig_rule)  # validated now, not at the first evaluation
        ig = {"steps": spec.ig_steps, "rule": spec.ig_rule}
    attribute = explainer(spec.attribution, any_range=True, output=spec.output, **ig)

    def fn(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with eval_norm(net):  # per example: batch norm with its running statistics, no buffer written
            return attribute(net, p, t, create_graph=True)

    return fn, spec.attribution == "saliency"


class Jacobian:
    """Products with ``J = d g / d x`` of every example at once, never forming ``J``.

    ``t(v)`` = ``J^T v`` (one backward pass through ``g``'s graph); ``__call__(v)`` = ``J v`` (for a symmetric
    ``J`` the same product, otherwise one backward pass through the graph of ``w(u) = J^T u``, which is linear in
    ``u``: ``J v = d <w(u), v> / d u``). Vectors have the shape of ``x``, ``(N, C, H, W)``.
    """

    def __init__(self, fn: AttributionFn, x: torch.Tensor, y: torch.Tensor, symmetric: bool) -> None:
        self.symmetric = symmetric
        with torch.enable_grad():
            self.x = x.detach().clone().requires_grad_(True)
            self.g = fn(self.x, y)
            self.w: torch.Tensor | None = None
            self.u: torch.Tensor | None = None
            if not symmetric and self.g.requires_grad:
                self.u = torch.zeros_like(self.g, requires_grad=True)
                (self.w,) = torch.autograd.grad(self.g, self.x, self.u, create_graph=True, allow_unused=True)

    @staticmethod
    def _grad(out: torch.Tensor | None, inp: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if out is None or not out.requires_grad:
            return torch.zeros_like(v)
        with torch.enable_grad():
            (r,) = torch.autograd.grad(out, inp, v, retain_graph=True, allow_unused=True)
        return torch.zeros_like(v) if r is None else r.detach()

    def t(self, v: torch.Tensor) -> torch.Tensor:
        return self._grad(self.g, self.x, v)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        if self.symmetric:
            return self.t(v)
        if self.u is None:
            return torch.zeros_like(v)
        return self._grad(self.w, self.u, v)


def row_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example l2 norm ``(N,)`` of ``(N, ...)``."""
    return t.flatten(1).norm(dim=1)


def _bcast(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1, 1)


def evaluate(fn: AttributionFn, points: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The attribution at ``points`` without keeping a graph."""
    with torch.enable_grad():
        return fn(points.detach().requires_grad_(True), y).detach()


def power_iteration(
    jac: Jacobian, x: torch.Tensor, iters: int, tol: float, generator: torch.Generator | None
) -> SpectralNorm:
    """Power iteration on ``J^T J`` for every example at once, from a random unit start drawn with ``generator``
    (see :func:`attrobust.metrics.bounds.attribution_spectral_norm`)."""
    device = generator.device if generator is not None else x.device
    v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=device).to(x.device)
    v = v / _bcast(row_norm(v).clamp_min(torch.finfo(x.dtype).tiny))
    sigma = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    converged = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    best_v = v
    it = 0
    for it in range(1, iters + 1):
        jv = jac(v)
        new_sigma = row_norm(jv)
        w = jac.t(jv)
        w_norm = row_norm(w)
        converged = (new_sigma - sigma).abs() <= tol * new_sigma.clamp_min(torch.finfo(x.dtype).tiny)
        converged |= new_sigma == 0
        sigma, best_v = new_sigma, v
        v = torch.where(_bcast(w_norm > 0), w / _bcast(w_norm.clamp_min(torch.finfo(x.dtype).tiny)), v)
        if it > 1 and bool(converged.all()):
            break
    return SpectralNorm(xi_max=sigma, v_max=best_v, converged=converged, iterations=it)
