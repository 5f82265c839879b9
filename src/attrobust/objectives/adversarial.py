"""Objectives on the prediction: natural cross-entropy, PGD adversarial training, TRADES and MART.

Every budget is in pixel units; ``x`` is float ``(N, C, H, W)`` in [0, 1] and ``y`` int64 ``(N,)``. Losses are
means over the batch of per-example terms (the reference implementations average the same way, so the weights
``beta`` are per-example weights). Each objective is a frozen dataclass (:mod:`._base`); the adversarial ones
hold their inner attack as a validated :class:`~._base.Budget`, return ``(loss, logs, x_adv)`` from
``objective.adversarial(...)`` and follow the linear ``eps_warmup`` through ``objective.set_step``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..attacks.pgd import model_mode, pgd_loop
from ._base import (
    OBJECTIVES,
    AdversarialResult,
    BudgetedObjective,
    Objective,
    accuracy,
    check_weight,
    cross_entropy,
    logits_of,
    objective_dataclass,
)


@OBJECTIVES.register("natural")
@objective_dataclass
class Natural(Objective):
    """Natural training: ``L(θ) = E_(x,y) CE(f_θ(x), y)`` on the clean batch.

    The objective maps ``(model, x (N, C, H, W) in [0, 1], y int64 (N,))`` to the mean cross-entropy
    (scalar) and ``{"loss", "acc"}`` on the clean examples; ``generator`` is accepted and unused.
    """

    name: ClassVar[str] = "natural"

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        loss, logs = cross_entropy(model, x, y)
        return loss, logs, x


@OBJECTIVES.register("pgd_at")
@objective_dataclass
class PGDAT(BudgetedObjective):
    """PGD adversarial training (Madry et al., ICLR 2018, eq. 2.1; IGR paper Table 1 ``L_at``):
    ``min_θ E_(x,y) max_{‖δ‖_∞ ≤ eps, x+δ ∈ [0,1]} CE(f_θ(x + δ), y)``.

    The inner maximum is approximated by :func:`attrobust.attacks.pgd` (l_inf, ``steps`` signed steps of
    ``step_size``, uniform random start in the eps ball drawn from the trainer's generator when
    ``random_start``); the outer loss is the mean cross-entropy on the adversarial batch, and the logs report
    ``loss``, ``acc`` on those adversarial examples and the ``eps`` used. The defaults are the MNIST setting of
    Madry et al. and the RAR paper (eps 0.3, step 0.01, 40 steps, random start, no warm-up).

    ``eps_warmup > 0`` ramps the budget linearly over the first ``eps_warmup`` training steps: at (0-based) step
    ``t`` the attack uses ``eps_t = eps * min(1, (t + 1) / eps_warmup)`` and ``step_size * eps_t / eps``. Small
    networks trained from scratch at eps 0.3 often stay at chance level without it. The trainer reports the step
    through ``objective.set_step(t)`` before every call; without that call (outside a trainer) the full budget
    is used. Budget fields: ``eps``, ``step_size``, ``steps``, ``random_start``, ``eps_warmup``.

    As in Madry et al.'s reference code, the attack runs with the model in whatever mode the trainer put it
    (train mode during training); the attack does not change the mode. Gradients of the attack are taken with
    respect to the input only, so parameter ``.grad`` is untouched until the caller backpropagates ``loss``.

    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; ``eps`` and ``step_size`` in
    pixel units.
    """

    name: ClassVar[str] = "pgd_at"
    random_start: bool = True

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        scale = self.scale
        x_adv = pgd(
            model, x, y, eps=self.eps * scale, step_size=self.step_size * scale, steps=self.steps,
            random_start=self.random_start, generator=generator, mode="keep",
        ).detach()  # fmt: skip
        loss, logs = cross_entropy(model, x_adv, y)
        logs["eps"] = self.eps * scale
        return loss, logs, x_adv


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row ``KL(p ‖ q) = Σ_k p_k (log p_k - log q_k)`` from log-probabilities ``(N, K)`` -> ``(N,)``."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


def small_start(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """``x + std * N(0, I)`` clamped to [0, 1]: the start point of the TRADES and MART inner attacks."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + std * noise).clamp(0.0, 1.0)


@objective_dataclass
class KLObjective(BudgetedObjective):
    """What TRADES and MART share: the weight ``beta`` of their KL term and the start of their inner attack,
    ``x + start_std * N(0, I)`` clamped to [0, 1] (no ``random_start`` field)."""

    beta: float = 6.0
    start_std: float = 0.001

    def check(self) -> None:
        self._set_field("beta", check_weight(self.beta, f"{self.name} beta"))
        check_weight(self.start_std, f"{self.name} start_std")

    def search(
        self,
        model: nn.Module,
        loss_fn: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """The inner attack, in eval mode as in both reference codes: ``steps`` signed steps maximising
        ``loss_fn`` (per example, ``(N,)``) from the Gaussian start, in the (warmed-up) eps ball; detached."""
        scale = self.scale
        with model_mode(model, "eval"):
            return pgd_loop(loss_fn, x, eps=self.eps * scale, step_size=self.step_size * scale, steps=self.steps,
                            x_init=small_start(x, self.start_std, generator))  # fmt: skip


@OBJECTIVES.register("trades")
@objective_dataclass
class TRADES(KLObjective):
    """TRADES (Zhang et al., ICML 2019, eq. 5 and Algorithm 1):
    ``CE(f(x), y) + beta * KL(f(x) ‖ f(x~))`` with ``x~ = argmax_{‖x' - x‖_∞ ≤ eps} KL(f(x) ‖ f(x'))``.

    ``f`` denotes the softmax probabilities. The inner maximisation starts at ``x + start_std * N(0, I)`` (drawn
    from the trainer's generator) and takes ``steps`` signed steps of ``step_size`` on the KL to the clean
    prediction (held fixed), with the model in eval mode as in the reference code; the outer loss differentiates
    both ``f(x)`` and ``f(x~)``. Both terms are means over the batch of per-example values (the reference code
    sums the KL and divides by the batch size), so ``beta`` weighs per-example terms; TRADES' own MNIST/CIFAR
    settings use ``beta`` 1-6. The IGR paper's Table 1 writes the first term on ``x~``; this objective follows
    the TRADES paper (clean cross-entropy).

    Logs: ``loss``, ``acc`` (clean), ``adv_acc``, ``kl``, ``eps``. ``eps_warmup`` as in :func:`pgd_at`.
    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """

    name: ClassVar[str] = "trades"

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        with model_mode(model, "eval"), torch.no_grad():
            clean_log_p = F.log_softmax(logits_of(model, x, y), dim=1)
        x_adv = self.search(model, lambda xa: kl_rows(clean_log_p, F.log_softmax(model(xa), dim=1)), x, generator)
        logits = logits_of(model, x, y)
        logits_adv = model(x_adv)
        natural_loss = F.cross_entropy(logits, y)
        robust = kl_rows(F.log_softmax(logits, dim=1), F.log_softmax(logits_adv, dim=1)).mean()
        loss = natural_loss + self.beta * robust
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "adv_acc": accuracy(logits_adv, y),
                "kl": float(robust.detach()), "eps": self.eps * self.scale}  # fmt: skip
        return loss, logs, x_adv


@OBJECTIVES.register("mart")
@objective_dataclass
class MART(KLObjective):
    """MART (Wang et al., ICLR 2020, eq. 14; IGR paper Table 1 ``L_mart``):
    ``BCE(f(x~), y) + beta * KL(f(x) ‖ f(x~)) * (1 - f_y(x))``.

    ``BCE(p, y) = -log p_y - log(1 - max_{k≠y} p_k)`` is the boosted cross-entropy on the adversarial
    probabilities; ``x~`` maximises the cross-entropy by PGD from ``x + start_std * N(0, I)`` (model in eval
    mode during the attack, as in the reference code). The KL term is weighted per example by the clean
    misclassification confidence ``1 - f_y(x)``; both terms are means over the batch (the reference code sums the
    weighted KL and divides by the batch size). A 1e-12 floor inside the logarithms keeps them finite.

    Logs: ``loss``, ``acc`` (on ``x~``), ``clean_acc``, ``bce``, ``kl``, ``eps``. ``eps_warmup`` as in
    :func:`pgd_at`. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """

    name: ClassVar[str] = "mart"

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        x_adv = self.search(model, lambda xa: F.cross_entropy(logits_of(model, xa, y), y, reduction="none"), x,
                            generator)  # fmt: skip
        logits = logits_of(model, x, y)
        logits_adv = model(x_adv)
        probs_adv = F.softmax(logits_adv, dim=1)
        others = probs_adv.scatter(1, y[:, None], 0.0)
        bce = F.cross_entropy(logits_adv, y) - torch.log((1.0 - others.max(1).values).clamp_min(1e-12)).mean()
        probs = F.softmax(logits, dim=1)
        kl = kl_rows(F.log_softmax(logits, dim=1), torch.log(probs_adv.clamp_min(1e-12)))
        robust = (kl * (1.0 - probs.gather(1, y[:, None]).squeeze(1))).mean()
        loss = bce + self.beta * robust
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits_adv, y), "clean_acc": accuracy(logits, y),
                "bce": float(bce.detach()), "kl": float(robust.detach()), "eps": self.eps * self.scale}  # fmt: skip
        return loss, logs, x_adv


# the public names are the registry's (``objectives.pgd_at(eps=...)`` builds the dataclass)
natural, pgd_at, trades, mart = Natural, PGDAT, TRADES, MART
