"""Objectives on the prediction: natural cross-entropy, PGD adversarial training, TRADES and MART.

Every budget is in pixel units; ``x`` is float ``(N, C, H, W)`` in [0, 1] and ``y`` int64 ``(N,)``. Losses are
means over the batch of per-example terms (the reference implementations average the same way, so the weights
``beta`` are per-example weights). The adversarial objectives expose ``objective.adversarial(...)`` returning
``(loss, logs, x_adv)`` and ``objective.set_step`` for the linear ``eps_warmup``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks import pgd
from ..attacks.pgd import model_mode, pgd_loop
from ._base import (
    OBJECTIVES,
    Objective,
    Warmup,
    accuracy,
    check_budget,
    check_weight,
    cross_entropy,
    describe,
    finish,
    logits_of,
)


@OBJECTIVES.register("natural")
def natural() -> Objective:
    """Natural training: ``L(θ) = E_(x,y) CE(f_θ(x), y)`` on the clean batch.

    The returned objective maps ``(model, x (N, C, H, W) in [0, 1], y int64 (N,))`` to the mean cross-entropy
    (scalar) and ``{"loss", "acc"}`` on the clean examples; ``generator`` is accepted and unused.
    """

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        loss, logs = cross_entropy(model, x, y)
        return loss, logs, x

    return finish(adversarial, "natural()")


@OBJECTIVES.register("pgd_at")
def pgd_at(
    eps: float = 0.3, step_size: float = 0.01, steps: int = 40, random_start: bool = True, eps_warmup: int = 0
) -> Objective:
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
    is used.

    As in Madry et al.'s reference code, the attack runs with the model in whatever mode the trainer put it
    (train mode during training); the attack does not change the mode. Gradients of the attack are taken with
    respect to the input only, so parameter ``.grad`` is untouched until the caller backpropagates ``loss``.

    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; ``eps`` and ``step_size`` in
    pixel units.
    """
    check_budget("pgd_at", eps, step_size, steps, eps_warmup)
    if not isinstance(random_start, bool):
        raise ValueError(f"pgd_at random_start: expected a bool, got {random_start!r}")
    warmup = Warmup(eps_warmup)

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        scale = warmup.fraction
        x_adv = pgd(
            model, x, y, eps=eps * scale, step_size=step_size * scale, steps=steps,
            random_start=random_start, generator=generator, mode="keep",
        ).detach()  # fmt: skip
        loss, logs = cross_entropy(model, x_adv, y)
        logs["eps"] = eps * scale
        return loss, logs, x_adv

    name = describe("pgd_at", eps=eps, step_size=step_size, steps=steps, random_start=random_start,
                    eps_warmup=eps_warmup)  # fmt: skip
    return finish(adversarial, name, warmup)


def kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Per-row ``KL(p ‖ q) = Σ_k p_k (log p_k - log q_k)`` from log-probabilities ``(N, K)`` -> ``(N,)``."""
    return (log_p.exp() * (log_p - log_q)).sum(1)


def _small_start(x: torch.Tensor, std: float, generator: torch.Generator | None) -> torch.Tensor:
    """``x + std * N(0, I)`` clamped to [0, 1]: the start point of the TRADES and MART inner attacks."""
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (x + std * noise).clamp(0.0, 1.0)


@OBJECTIVES.register("trades")
def trades(
    beta: float = 6.0,
    eps: float = 0.3,
    step_size: float = 0.01,
    steps: int = 40,
    start_std: float = 0.001,
    eps_warmup: int = 0,
) -> Objective:
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
    beta = check_weight(beta, "trades beta")
    check_budget("trades", eps, step_size, steps, eps_warmup)
    check_weight(start_std, "trades start_std")
    warmup = Warmup(eps_warmup)

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        scale = warmup.fraction
        with model_mode(model, "eval"):
            with torch.no_grad():
                clean_log_p = F.log_softmax(logits_of(model, x, y), dim=1)
            x_adv = pgd_loop(
                lambda xa: kl_rows(clean_log_p, F.log_softmax(model(xa), dim=1)),
                x, eps=eps * scale, step_size=step_size * scale, steps=steps,
                x_init=_small_start(x, start_std, generator),
            )  # fmt: skip
        logits = logits_of(model, x, y)
        logits_adv = model(x_adv)
        natural_loss = F.cross_entropy(logits, y)
        robust = kl_rows(F.log_softmax(logits, dim=1), F.log_softmax(logits_adv, dim=1)).mean()
        loss = natural_loss + beta * robust
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "adv_acc": accuracy(logits_adv, y),
                "kl": float(robust.detach()), "eps": eps * scale}  # fmt: skip
        return loss, logs, x_adv

    name = describe("trades", beta=beta, eps=eps, step_size=step_size, steps=steps, start_std=start_std,
                    eps_warmup=eps_warmup)  # fmt: skip
    return finish(adversarial, name, warmup)


@OBJECTIVES.register("mart")
def mart(
    beta: float = 6.0,
    eps: float = 0.3,
    step_size: float = 0.01,
    steps: int = 40,
    start_std: float = 0.001,
    eps_warmup: int = 0,
) -> Objective:
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
    beta = check_weight(beta, "mart beta")
    check_budget("mart", eps, step_size, steps, eps_warmup)
    check_weight(start_std, "mart start_std")
    warmup = Warmup(eps_warmup)

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        scale = warmup.fraction
        with model_mode(model, "eval"):
            x_adv = pgd_loop(
                lambda xa: F.cross_entropy(logits_of(model, xa, y), y, reduction="none"),
                x, eps=eps * scale, step_size=step_size * scale, steps=steps,
                x_init=_small_start(x, start_std, generator),
            )  # fmt: skip
        logits = logits_of(model, x, y)
        logits_adv = model(x_adv)
        probs_adv = F.softmax(logits_adv, dim=1)
        others = probs_adv.scatter(1, y[:, None], 0.0)
        bce = F.cross_entropy(logits_adv, y) - torch.log((1.0 - others.max(1).values).clamp_min(1e-12)).mean()
        probs = F.softmax(logits, dim=1)
        kl = kl_rows(F.log_softmax(logits, dim=1), torch.log(probs_adv.clamp_min(1e-12)))
        robust = (kl * (1.0 - probs.gather(1, y[:, None]).squeeze(1))).mean()
        loss = bce + beta * robust
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits_adv, y), "clean_acc": accuracy(logits, y),
                "bce": float(bce.detach()), "kl": float(robust.detach()), "eps": eps * scale}  # fmt: skip
        return loss, logs, x_adv

    name = describe("mart", beta=beta, eps=eps, step_size=step_size, steps=steps, start_std=start_std,
                    eps_warmup=eps_warmup)  # fmt: skip
    return finish(adversarial, name, warmup)
