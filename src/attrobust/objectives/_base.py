"""What every objective shares: the registry, ``create``, the clean cross-entropy, and the eps warm-up.

An *objective* is a callable ``objective(model, x, y, *, generator=None) -> (loss, logs)``; see
:mod:`attrobust.objectives` for the contract. Objectives that train on an adversarial batch ``x~`` also expose
``objective.adversarial(model, x, y, *, generator=None) -> (loss, logs, x_adv)`` so a regulariser such as IGR
can reuse the base method's ``x~`` instead of searching for its own.
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
from ..models import softplus

Objective = Callable[..., tuple[torch.Tensor, dict[str, float]]]
AdversarialFn = Callable[..., tuple[torch.Tensor, dict[str, float], torch.Tensor]]
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
        valid = ", ".join(p for p in inspect.signature(factory).parameters if p != "base_params") or "(none)"
        raise ValueError(f"objective {name!r}: bad parameters {sorted(params)} ({err}); expected: {valid}") from None


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """Validate a training batch: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``."""
    check_images(x)
    check_labels(y, x.shape[0])


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy of ``model(x)`` against ``y`` and its logs (``loss``, ``acc``)."""
    logits = logits_of(model, x, y)
    loss = F.cross_entropy(logits, y)
    return loss, {"loss": float(loss.detach()), "acc": accuracy(logits, y)}


def logits_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``model(x)`` checked to be logits ``(N, K)`` with ``y`` in ``[0, K)``."""
    logits = check_logits(model(x), x.shape[0])
    check_labels(y, x.shape[0], logits.shape[1])
    return logits


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``logits (N, K)`` whose arg-max equals ``y (N,)``."""
    return float((logits.detach().argmax(1) == y).float().mean())


def check_budget(owner: str, eps: float, step_size: float, steps: int, eps_warmup: int = 0) -> None:
    """Validate an inner attack's l_inf budget (pixel units) and its warm-up length."""
    check_positive(float(eps), f"{owner} eps", allow_zero=True)
    check_positive(float(step_size), f"{owner} step_size", allow_zero=True)
    check_int(steps, f"{owner} steps", 0)
    check_int(eps_warmup, f"{owner} eps_warmup", 0)


def check_weight(value: float, name: str) -> float:
    """A finite, non-negative loss weight (lambda, beta, ...) as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}")
    check_positive(float(value), name, allow_zero=True)
    return float(value)


def attribution_model(model: nn.Module, beta: float | None) -> nn.Module:
    """``model`` itself, or its parameter-sharing Softplus(beta) copy when ``beta`` is given."""
    return model if beta is None else softplus(model, beta)


def check_beta(beta: float | None, name: str) -> None:
    """A Softplus sharpness: None (use the model itself) or a finite float > 0."""
    if beta is not None:
        check_weight(beta, name)
        if beta == 0:
            raise ValueError(f"{name}: expected None or a float > 0, got {beta!r}")


def check_flag(value: object, name: str) -> None:
    """An option that must be a bool (not merely truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected a bool, got {value!r}")


class Warmup:
    """Linear warm-up of an attack budget over the first ``steps`` training steps.

    At (0-based) training step ``t`` the budget is scaled by ``min(1, (t + 1) / steps)``; with ``steps == 0``, or
    before the trainer has called :meth:`set_step`, the full budget is used.
    """

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.fraction = 1.0

    def set_step(self, step: int) -> None:
        """Set the training step (0-based) that the next call belongs to."""
        self.fraction = min(1.0, (step + 1) / self.steps) if self.steps else 1.0


def finish(adversarial: AdversarialFn, qualname: str, warmup: Warmup | None = None) -> Objective:
    """Wrap ``adversarial(model, x, y, *, generator) -> (loss, logs, x_adv)`` into an objective.

    Both the objective and its ``adversarial`` attribute (for IGR) validate the batch; the objective returns
    ``(loss, logs)`` and, when a ``warmup`` is given, carries ``set_step`` (called by the trainer before every
    step).
    """

    def checked(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        check_batch(x, y)
        return adversarial(model, x, y, generator=generator)

    def objective(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs, _ = checked(model, x, y, generator=generator)
        return loss, logs

    objective.adversarial = checked  # type: ignore[attr-defined]
    if warmup is not None:
        objective.set_step = warmup.set_step  # type: ignore[attr-defined]
    objective.__qualname__ = qualname
    return objective


def describe(name: str, **params: Any) -> str:
    """``name(k=v, ...)``: a readable qualname for a built objective."""
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
