"""Training objectives on the prediction: natural cross-entropy and PGD adversarial training.

An *objective* is a callable ``objective(model, x, y, *, generator=None) -> (loss, logs)``:

- ``model``: classifier mapping float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)``;
- ``x``: float ``(N, C, H, W)`` in [0, 1] pixel space (every budget is in pixel units);
- ``y``: int64 labels ``(N,)``;
- ``generator``: the trainer's ``torch.Generator`` for any randomness of the objective (PGD random start),
  so a seeded run (and a resumed one) is reproducible;
- returns ``loss``, a differentiable scalar tensor (mean over the batch), and ``logs``, a ``dict[str, float]``
  with at least ``"loss"`` and ``"acc"`` (accuracy on the examples the loss is computed on: the clean batch for
  :func:`natural`, the adversarial batch for :func:`pgd_at`).

Objectives are built by factories registered in :data:`OBJECTIVES`; ``create(name, **params)`` returns the
callable. Objectives never change ``model.training``: the trainer decides the mode. An objective whose
hyper-parameters follow a schedule (``pgd_at`` with ``eps_warmup``) exposes ``objective.set_step(step)``, which
the trainer calls with the 0-based global step before every call, so a resumed run follows the same schedule.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_int, check_labels, check_logits, check_positive
from .._registry import Registry
from ..attacks import pgd

Objective = Callable[..., tuple[torch.Tensor, dict[str, float]]]
ObjectiveFactory = Callable[..., Objective]

OBJECTIVES: Registry[ObjectiveFactory] = Registry("objective")


def create(name: str, **params: Any) -> Objective:
    """Build the registered objective ``name`` with its hyper-parameters ``params``.

    An unknown name or parameter raises ``ValueError`` listing the valid ones.
    """
    factory = OBJECTIVES.get(name)
    try:
        return factory(**params)
    except TypeError as err:
        valid = ", ".join(inspect.signature(factory).parameters) or "(none)"
        raise ValueError(f"objective {name!r}: bad parameters {sorted(params)} ({err}); expected: {valid}") from None


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy of ``model(x)`` against ``y`` and its logs (``loss``, ``acc``)."""
    logits = check_logits(model(x), x.shape[0])
    check_labels(y, x.shape[0], logits.shape[1])
    loss = F.cross_entropy(logits, y)
    acc = (logits.detach().argmax(1) == y).float().mean()
    return loss, {"loss": float(loss.detach()), "acc": float(acc)}


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    check_images(x)
    check_labels(y, x.shape[0])


@OBJECTIVES.register("natural")
def natural() -> Objective:
    """Natural training: ``L(θ) = E_(x,y) CE(f_θ(x), y)`` on the clean batch.

    The returned objective maps ``(model, x (N, C, H, W) in [0, 1], y int64 (N,))`` to the mean cross-entropy
    (scalar) and ``{"loss", "acc"}`` on the clean examples; ``generator`` is accepted and unused.
    """

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        _check_batch(x, y)
        return _cross_entropy(model, x, y)

    objective.__qualname__ = "natural()"
    return objective


@OBJECTIVES.register("pgd_at")
def pgd_at(
    eps: float = 0.3, step_size: float = 0.01, steps: int = 40, random_start: bool = True, eps_warmup: int = 0
) -> Objective:
    """PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
    ICLR 2018, eq. 2.1): ``min_θ E_(x,y) max_{‖δ‖_∞ ≤ eps, x+δ ∈ [0,1]} CE(f_θ(x + δ), y)``.

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
    (train mode during training: batch-norm uses batch statistics and updates its running averages during the
    attack's forward passes); the attack does not change the mode. Gradients of the attack are taken with
    respect to the input only, so parameter ``.grad`` is untouched until the caller backpropagates ``loss``.

    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; ``eps`` and ``step_size`` in
    pixel units.
    """
    check_positive(float(eps), "pgd_at eps", allow_zero=True)
    check_positive(float(step_size), "pgd_at step_size", allow_zero=True)
    check_int(steps, "pgd_at steps", 0)
    check_int(eps_warmup, "pgd_at eps_warmup", 0)
    if not isinstance(random_start, bool):
        raise ValueError(f"pgd_at random_start: expected a bool, got {random_start!r}")
    current = {"fraction": 1.0}

    def set_step(step: int) -> None:
        """Set the training step (0-based) that the next call belongs to (drives ``eps_warmup``)."""
        current["fraction"] = min(1.0, (step + 1) / eps_warmup) if eps_warmup else 1.0

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        _check_batch(x, y)
        scale = current["fraction"]
        x_adv = pgd(
            model,
            x,
            y,
            eps=eps * scale,
            step_size=step_size * scale,
            steps=steps,
            random_start=random_start,
            generator=generator,
            mode="keep",
        ).detach()
        loss, logs = _cross_entropy(model, x_adv, y)
        logs["eps"] = eps * scale
        return loss, logs

    objective.set_step = set_step  # type: ignore[attr-defined]
    objective.__qualname__ = (
        f"pgd_at(eps={eps}, step_size={step_size}, steps={steps}, random_start={random_start}, eps_warmup={eps_warmup})"
    )
    return objective
