"""IG-NORM and IG-SUM-NORM (Chen et al., "Robust Attribution Regularization", NeurIPS 2019: the RAR paper).

Both regularise the size ``s(IG^ℓ_y(x, x'))`` of the Integrated Gradients of the loss from ``x`` to a point
``x'`` of the eps ball, maximised by PGD; they differ in one choice, a class parameter of the one implementation
:class:`RARObjective`: IG-NORM adds the clean cross-entropy outside the maximum, IG-SUM-NORM puts the
cross-entropy inside it. Conventions (reductions, ``softplus_beta``, ``ig_checkpoint``, batch norm) are those of
the attribution objectives, stated in :mod:`attrobust.objectives`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int
from ..attributions import integrated_gradients
from ..attributions.gradients import IG_RULES
from ..models import eval_norm
from ._base import (
    OBJECTIVES,
    AdversarialResult,
    BudgetedObjective,
    accuracy,
    attribution_model,
    check_beta,
    check_flag,
    check_weight,
    logits_of,
    objective_dataclass,
)

SIZE_FUNCTIONS = ("l1", "sum")


def loss_ig(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, steps: int, rule: str = "right",
            checkpoint: bool = False) -> torch.Tensor:  # fmt: skip
    """``IG^ℓ_y(x, x')`` of the RAR paper: Integrated Gradients of the per-example cross-entropy from the baseline
    ``x`` to ``x_adv``, ``(N, C, H, W)``, differentiable w.r.t. ``x_adv`` and the parameters.

    Completeness: ``sum(IG) ~= CE(x') - CE(x)``, exactly so as ``steps`` grows.
    """
    return integrated_gradients(
        model, x_adv, y, baseline=x, steps=steps, rule=rule, create_graph=True, output="loss", checkpoint=checkpoint
    )


def size_of(ig: torch.Tensor, size: str) -> torch.Tensor:
    """The RAR size function ``s``: ``‖IG‖_1`` (``"l1"``) or ``sum(IG)`` (``"sum"``) per example ``(N,)``."""
    flat = ig.flatten(1)
    return flat.abs().sum(1) if size == "l1" else flat.sum(1)


@objective_dataclass
class RARObjective(BudgetedObjective):
    """The RAR objectives: ``ig_steps`` IG points in the outer loss (the paper's "m in the gradient step"),
    ``attack_ig_steps`` in the inner PGD search (its "m in the attack step", random start), Riemann rule
    ``ig_rule``, size function ``size`` (``"l1"`` or ``"sum"``), optional Softplus(``softplus_beta``) copy for the
    attribution, ``ig_checkpoint`` (same loss, less memory). ``ce_inside`` (a class parameter) puts the
    cross-entropy inside the maximum at ``x*`` (IG-SUM-NORM) instead of on the clean batch (IG-NORM); the weight of
    the IG term is the field named ``weight_name``.

    Modes: the IG term runs in ``eval_norm``; the CE follows the model's mode, inside the search too.
    """

    ce_inside: ClassVar[bool]
    weight_name: ClassVar[str]
    ig_steps: int = 50
    attack_ig_steps: int = 10
    random_start: bool = True
    ig_rule: str = "right"
    size: str = "l1"
    softplus_beta: float | None = None
    ig_checkpoint: bool = False

    @property
    def weight(self) -> float:
        """The weight of the IG term (``lam`` of IG-NORM, ``beta`` of IG-SUM-NORM)."""
        return getattr(self, self.weight_name)

    def check(self) -> None:
        self._set_field(self.weight_name, check_weight(self.weight, f"{self.name} {self.weight_name}"))
        check_int(self.ig_steps, f"{self.name} ig_steps", 1)
        check_int(self.attack_ig_steps, f"{self.name} attack_ig_steps", 1)
        check_choice(self.ig_rule, f"{self.name} ig_rule", IG_RULES)
        check_choice(self.size, f"{self.name} size", SIZE_FUNCTIONS)
        check_beta(self.softplus_beta, f"{self.name} softplus_beta")
        check_flag(self.ig_checkpoint, f"{self.name} ig_checkpoint")

    def regulariser(self, attr: nn.Module, x: torch.Tensor, xa: torch.Tensor, y: torch.Tensor, steps: int,
                    checkpoint: bool = False) -> torch.Tensor:  # fmt: skip
        """``s(IG^ℓ_y(x, xa))`` per example ``(N,)`` with ``steps`` points, per example (``eval_norm``)."""
        with eval_norm(attr):
            return size_of(loss_ig(attr, x, xa, y, steps, self.ig_rule, checkpoint), self.size)

    def bracket(self, model: nn.Module, attr: nn.Module, x: torch.Tensor, xa: torch.Tensor, y: torch.Tensor,
                steps: int, checkpoint: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """IG-SUM-NORM's bracket at ``xa``: per-example ``CE(f(xa), y)`` and ``s(IG)`` ``(N,)``, and the logits
        ``(N, K)``; the IG term is zero (not computed) when the weight is."""
        logits = logits_of(model, xa, y)
        ce = F.cross_entropy(logits, y, reduction="none")
        if not self.weight:
            return ce, torch.zeros_like(ce), logits
        return ce, self.regulariser(attr, x, xa, y, steps, checkpoint), logits

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        attr = attribution_model(model, self.softplus_beta)

        def inner_loss(xa: torch.Tensor) -> torch.Tensor:
            if not self.ce_inside:
                return self.regulariser(attr, x, xa, y, self.attack_ig_steps)
            ce, reg, _ = self.bracket(model, attr, x, xa, y, self.attack_ig_steps)
            return ce + self.weight * reg

        x_adv = self.budget.search(inner_loss, x, self.scale, generator)
        if self.ce_inside:  # the bracket at x*, per example, then the batch mean
            ce, reg, logits = self.bracket(model, attr, x, x_adv, y, self.ig_steps, self.ig_checkpoint)
            loss = (ce + self.weight * reg).mean()
            ce_log, reg_log = ce.detach().mean(), reg.detach().mean()
        else:  # clean CE (model's mode) plus the IG term at x*
            logits = logits_of(model, x, y)
            ce = F.cross_entropy(logits, y)
            reg = self.regulariser(attr, x, x_adv, y, self.ig_steps, self.ig_checkpoint).mean()
            loss = ce + self.weight * reg
            ce_log, reg_log = ce.detach(), reg.detach()
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce_log),
                "ig_norm": float(reg_log), "eps": self.eps * self.scale}  # fmt: skip
        return loss, logs, x_adv


@OBJECTIVES.register("ig_norm")
@objective_dataclass
class IGNorm(RARObjective):
    """IG-NORM (RAR paper eq. 4 with ``s = ‖·‖_1`` on the input layer; IGR paper appendix B.2 eq. 46):
    ``CE(f(x), y) + lam * max_{‖x' - x‖_∞ ≤ eps} ‖IG^ℓ_y(x, x')‖_1``.

    ``IG^ℓ_y(x, x')`` is :func:`loss_ig`, Integrated Gradients of the cross-entropy from ``x`` to ``x'``. The
    inner maximiser ``x*`` is found by PGD (``steps`` signed steps of ``step_size``, random start) on the
    regulariser computed with the coarser ``attack_ig_steps`` points (the RAR paper's "m in the attack step"); the
    outer loss uses ``ig_steps`` points (its "m in the gradient step") and is differentiated through IG.
    Defaults: the RAR MNIST setting (lam 1, m 50 / 10, eps 0.3, 40 steps of 0.01).

    ``size="sum"`` replaces the 1-norm by the plain sum. With ``lam=1`` the objective is then
    ``CE(x) + max (CE(x') - CE(x)) = max CE(x')``, the adversarial loss (RAR Proposition 1; exact up to IG's
    quadrature error). With ``ig_steps=1``, ``ig_rule="left"`` the regulariser is ``‖(x' - x) ⊙ ∇ℓ(x)‖_1`` whose
    maximum over the ball is ``eps * ‖∇ℓ(x)‖_1`` (RAR Proposition 2: input-gradient regularisation with
    ``lam' = lam * eps``; see :func:`input_gradient_reg` with ``q=1``).

    Modes: the CE follows the model's mode; the inner search (IG only) and the outer IG run in ``eval_norm``.

    Reduction: per-example CE and IG norms (summed over pixels), averaged over the batch. Logs: ``loss``,
    ``acc`` (clean), ``ce``, ``ig_norm``, ``eps``. ``eps_warmup``: linear budget ramp as in ``pgd_at``.
    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """

    name: ClassVar[str] = "ig_norm"
    ce_inside: ClassVar[bool] = False
    weight_name: ClassVar[str] = "lam"
    lam: float = 1.0


@OBJECTIVES.register("ig_sum_norm")
@objective_dataclass
class IGSumNorm(RARObjective):
    """IG-SUM-NORM (RAR paper; IGR paper appendix B.2 eq. 47):
    ``max_{‖x' - x‖_∞ ≤ eps} CE(f(x'), y) + beta * ‖IG^ℓ_y(x, x')‖_1``.

    The inner maximiser ``x*`` of the whole bracket is found by PGD (random start) with ``attack_ig_steps`` IG
    points; the outer loss evaluates the bracket at ``x*`` with ``ig_steps`` points and is differentiated
    through IG. ``beta`` is the paper's weight (0.1 on MNIST, the default; RAR appendix C.1.1); the Softplus
    sharpness of an optional smooth attribution copy is ``softplus_beta``. With ``beta=0`` the objective is
    PGD adversarial training with the same random start. ``size="sum"`` swaps the 1-norm for the plain sum.

    Modes: the bracket's CE follows the model's mode, in the inner search too (PGD-AT's convention, so
    ``beta=0`` is ``pgd_at`` on batch-norm nets as well); the IG term runs in ``eval_norm``.

    Reduction: per-example terms averaged over the batch. Logs: ``loss``, ``acc`` (on ``x*``), ``ce``,
    ``ig_norm``, ``eps``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """

    name: ClassVar[str] = "ig_sum_norm"
    ce_inside: ClassVar[bool] = True
    weight_name: ClassVar[str] = "beta"
    beta: float = 0.1


ig_norm, ig_sum_norm = IGNorm, IGSumNorm
