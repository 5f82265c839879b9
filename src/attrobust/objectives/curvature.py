"""Regularisers of the input gradient and curvature: SSR (largest eigenvalue of the input Hessian) and
input-gradient regularisation (double backpropagation).

Every objective maps ``(model, x, y, *, generator=None)`` to ``(loss, logs)`` (see :mod:`attrobust.objectives`);
``x`` is float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``. Both are :class:`RegularisedCE`: the clean
cross-entropy plus ``lam`` times a per-example term. Reductions and second derivatives as stated in
:mod:`attrobust.objectives`: per-example terms averaged over the batch; ``softplus_beta`` computes the regularised
quantity on a parameter-sharing Softplus(beta) copy of a ReLU model. The cross-entropy follows the model's mode;
the gradient and curvature terms are computed per example inside ``attrobust.models.eval_norm`` (BatchNorm with
its running statistics, dropout off, nothing written), for the reasons given there.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ..attributions import grad_of, gradient
from ..models import eval_norm
from ._base import (
    OBJECTIVES,
    AdversarialResult,
    Objective,
    accuracy,
    attribution_model,
    check_beta,
    check_weight,
    logits_of,
    objective_dataclass,
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


@objective_dataclass
class RegularisedCE(Objective):
    """``CE(f(x), y) + lam * mean_i r(x_i)`` with a per-example term ``r`` (:meth:`term`, computed on the model or
    its Softplus(``softplus_beta``) copy inside ``eval_norm``) logged as ``log_name``; the CE follows the model's
    mode. ``x_adv`` is ``x`` (no inner attack)."""

    log_name: ClassVar[str]
    lam: float = 1.0
    softplus_beta: float | None = None

    def __post_init__(self) -> None:
        self._set_field("lam", check_weight(self.lam, f"{self.name} lam"))
        self.check()
        check_beta(self.softplus_beta, f"{self.name} softplus_beta")

    def check(self) -> None:
        """Validate the fields of the term."""

    @abc.abstractmethod
    def term(self, attr: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
             ) -> torch.Tensor:  # fmt: skip
        """The batch mean of the per-example term on ``attr`` (inside ``eval_norm``): a scalar."""

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        logits = logits_of(model, x, y)
        ce = F.cross_entropy(logits, y)
        attr = attribution_model(model, self.softplus_beta)
        with eval_norm(attr):
            reg = self.term(attr, x, y, generator)
        loss = ce + self.lam * reg
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                self.log_name: float(reg.detach())}  # fmt: skip
        return loss, logs, x


@OBJECTIVES.register("ssr")
@objective_dataclass
class SSR(RegularisedCE):
    """Smooth Surface Regularisation (IGR paper appendix B.2 eq. 52): ``CE(f(x), y) + lam * max_i ξ_i``.

    ``max_i ξ_i`` is the largest eigenvalue of the input Hessian of the per-example loss, estimated by
    :func:`input_hessian_top_eigenvalue` with ``power_iters`` Hessian-vector products from a random start drawn
    from the trainer's generator (on the model itself, where the Hessian is ``W (diag(p) - p p^T) W^T``, or on a
    Softplus(``softplus_beta``) copy). The default ``lam`` is this package's; the source gives none. Modes: the
    CE follows the model's mode, the eigenvalue is per example (``eval_norm``, nothing written).

    Reduction: per-example CE and eigenvalues averaged over the batch. Logs: ``loss``, ``acc`` (clean), ``ce``,
    ``eigenvalue``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """

    name: ClassVar[str] = "ssr"
    log_name: ClassVar[str] = "eigenvalue"
    power_iters: int = 10

    def check(self) -> None:
        check_int(self.power_iters, f"{self.name} power_iters", 1)

    def term(self, attr: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
             ) -> torch.Tensor:  # fmt: skip
        return input_hessian_top_eigenvalue(attr, x, y, iters=self.power_iters, generator=generator).mean()


@OBJECTIVES.register("input_gradient_reg")
@objective_dataclass
class InputGradientReg(RegularisedCE):
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

    name: ClassVar[str] = "input_gradient_reg"
    log_name: ClassVar[str] = "grad_norm"
    q: float = 2.0

    def check(self) -> None:
        self._set_field("q", check_weight(self.q, f"{self.name} q"))
        if self.q < 1:
            raise ValueError(f"{self.name} q: expected a float >= 1, got {self.q!r}")

    def term(self, attr: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
             ) -> torch.Tensor:  # fmt: skip
        g = gradient(attr, x, y, create_graph=True, output="loss")
        return g.abs().pow(self.q).flatten(1).sum(1).mean()


ssr, input_gradient_reg = SSR, InputGradientReg
