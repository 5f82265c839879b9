"""Regularisers of the input gradient and curvature: SSR (largest eigenvalue of the input Hessian) and
input-gradient regularisation (double backpropagation).

Every objective maps ``(model, x, y, *, generator=None)`` to ``(loss, logs)`` (see :mod:`attrobust.objectives`);
``x`` is float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``. Reductions and second derivatives as in
:mod:`.attributional`: per-example terms averaged over the batch; ``softplus_beta`` computes the regularised
quantity on a parameter-sharing Softplus(beta) copy of a ReLU model. The cross-entropy follows the model's mode;
the gradient and curvature terms are computed per example inside ``attrobust.models.eval_norm`` (BatchNorm with
its running statistics, dropout off, nothing written), for the reasons given in :mod:`.attributional`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ..attributions import grad_of, gradient
from ..models import eval_norm
from ._base import (
    OBJECTIVES,
    Objective,
    accuracy,
    attribution_model,
    check_beta,
    check_weight,
    describe,
    finish,
    logits_of,
)


def input_hessian_top_eigenvalue(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    iters: int = 10,
    generator: torch.Generator | None = None,
    create_graph: bool = True,
) -> torch.Tensor:
    """Dominant eigenvalue of each example's input Hessian ``∇²_x CE(f(x), y)``, shape ``(N,)``.

    Power iteration with Hessian-vector products (double backward through one first-order gradient; the
    ``(D, D)`` Hessian is never formed): ``v <- H v / ‖H v‖`` from a random unit ``v`` (drawn from
    ``generator``) for ``iters`` products, then the Rayleigh quotient ``v·Hv`` with one more product, which
    carries its graph when ``create_graph`` (differentiable w.r.t. the parameters). Examples are independent
    (the Hessian of the summed loss is block-diagonal), so all are iterated at once.

    Power iteration converges to the eigenvalue of largest magnitude; for piecewise-linear (ReLU) networks the
    input Hessian is ``W^T (diag(p) - p p^T) W`` (IGR appendix B.2 eq. 52), positive semi-definite, so that is
    the largest eigenvalue the SSR paper regularises.
    """
    check_int(iters, "iters", 1)
    with torch.enable_grad():
        xi = x.detach().requires_grad_(True)
        loss = F.cross_entropy(logits_of(model, xi, y), y, reduction="sum")
        g = grad_of(loss, xi, create_graph=True)
        v = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        for _ in range(iters):
            v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (x.dim() - 1)))
            v = grad_of((g * v).sum(), xi, retain_graph=True)
        v = v / v.flatten(1).norm(dim=1).clamp_min(1e-30).view(-1, *([1] * (x.dim() - 1)))
        hv = grad_of((g * v).sum(), xi, create_graph=create_graph)
    return (v * hv).flatten(1).sum(1)


@OBJECTIVES.register("ssr")
def ssr(lam: float = 1.0, power_iters: int = 10, softplus_beta: float | None = None) -> Objective:
    """Smooth Surface Regularisation (IGR paper appendix B.2 eq. 52): ``CE(f(x), y) + lam * max_i ξ_i``.

    ``max_i ξ_i`` is the largest eigenvalue of the input Hessian of the per-example loss, estimated by
    :func:`input_hessian_top_eigenvalue` with ``power_iters`` Hessian-vector products from a random start drawn
    from the trainer's generator (on the model itself, where the Hessian is ``W (diag(p) - p p^T) W^T``, or on a
    Softplus(``softplus_beta``) copy). The default ``lam`` is this package's; the source gives none. Modes: the
    CE follows the model's mode, the eigenvalue is per example (``eval_norm``, nothing written).

    Reduction: per-example CE and eigenvalues averaged over the batch. Logs: ``loss``, ``acc`` (clean), ``ce``,
    ``eigenvalue``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """
    lam = check_weight(lam, "ssr lam")
    check_int(power_iters, "ssr power_iters", 1)
    check_beta(softplus_beta, "ssr softplus_beta")

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        logits = logits_of(model, x, y)
        ce = F.cross_entropy(logits, y)
        attr = attribution_model(model, softplus_beta)
        with eval_norm(attr):
            eig = input_hessian_top_eigenvalue(attr, x, y, iters=power_iters, generator=generator).mean()
        loss = ce + lam * eig
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                "eigenvalue": float(eig.detach())}  # fmt: skip
        return loss, logs, x

    return finish(adversarial, describe("ssr", lam=lam, power_iters=power_iters, softplus_beta=softplus_beta))


@OBJECTIVES.register("input_gradient_reg")
def input_gradient_reg(lam: float = 1.0, q: float = 2.0, softplus_beta: float | None = None) -> Objective:
    """Input-gradient regularisation (Drucker & LeCun 1992; Ross & Doshi-Velez, AAAI 2018; RAR Proposition 2):
    ``CE(f(x), y) + lam * ‖∇_x CE(f(x), y)‖_q^q``.

    The gradient is per example and keeps its graph (double backpropagation), on the model itself or on a
    Softplus(``softplus_beta``) copy. ``q=2`` is Ross & Doshi-Velez's squared 2-norm; ``q=1`` with ``lam = λ·eps`` is
    what IG-NORM with one IG step reduces to (RAR Proposition 2). The default ``lam`` is this package's. Modes:
    the CE follows the model's mode, the gradient is per example (``eval_norm``, nothing written).

    Reduction: per-example CE and gradient norms (summed over pixels) averaged over the batch. Logs: ``loss``,
    ``acc`` (clean), ``ce``, ``grad_norm``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64
    ``(N,)``.
    """
    lam = check_weight(lam, "input_gradient_reg lam")
    q = check_weight(q, "input_gradient_reg q")
    if q < 1:
        raise ValueError(f"input_gradient_reg q: expected a float >= 1, got {q!r}")
    check_beta(softplus_beta, "input_gradient_reg softplus_beta")

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        logits = logits_of(model, x, y)
        ce = F.cross_entropy(logits, y)
        attr = attribution_model(model, softplus_beta)
        with eval_norm(attr):
            g = gradient(attr, x, y, create_graph=True, output="loss")
        reg = g.abs().pow(q).flatten(1).sum(1).mean()
        loss = ce + lam * reg
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                "grad_norm": float(reg.detach())}  # fmt: skip
        return loss, logs, x

    return finish(adversarial, describe("input_gradient_reg", lam=lam, q=q, softplus_beta=softplus_beta))
