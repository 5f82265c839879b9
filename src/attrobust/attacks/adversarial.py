"""Attacks on the prediction: PGD, FGSM, CW-linf, SPSA and transfer attacks.

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, the model returns logits
``(N, K)``; budgets (``eps``, ``step_size``) are in pixel units; results are ``(N, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_choice,
    check_generator,
    check_int,
    check_labels,
    check_logits,
    check_model_batch,
    check_positive,
    model_input_errors,
)
from .pgd import model_mode, pgd_loop, project, random_point


def pgd(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    eps: float, step_size: float, steps: int, norm: str = "linf", random_start: bool = True,
    generator: torch.Generator | None = None, mode: str = "eval", loss: str = "ce", kappa: float = 0.0,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al. 2018), ``(N, C, H, W)``.

    ``loss`` is ``"ce"`` (cross-entropy, the default) or ``"margin"`` (the Carlini-Wagner margin of
    :func:`margin_loss`, capped at ``kappa``). ``norm`` is ``"linf"`` (signed steps) or ``"l2"`` (normalised
    steps); ``random_start`` begins at a uniform point of the eps ball drawn from ``generator``. The model runs in
    ``mode`` (``"eval"`` by default, as standard PGD evaluations do; ``"train"`` or ``"keep"``) and its previous
    mode is restored. ``steps=0`` returns the start point (the random start, or ``x``): accuracy there is accuracy
    under uniform noise, not under attack, which is why :class:`~attrobust.experiments.config.PGDEvalConfig`
    requires at least one step.
    """
    check_model_batch(model, x, y)
    check_choice(loss, "loss", ("ce", "margin"))
    if not kappa >= 0:
        raise ValueError(f"kappa: expected a value >= 0, got {kappa!r}")
    start = random_point(x, eps, norm, generator) if random_start else None

    def objective(x_adv: torch.Tensor) -> torch.Tensor:
        logits = check_logits(model(x_adv), x.shape[0])
        target = check_labels(y, x.shape[0], logits.shape[1])
        if loss == "margin":
            return margin_loss(logits, target, kappa)
        return F.cross_entropy(logits, target, reduction="none")

    with model_mode(model, mode), model_input_errors(model, x):
        return pgd_loop(objective, x, eps=eps, step_size=step_size, steps=steps, norm=norm, x_init=start)


def fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    eps: float, mode: str = "eval",
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one signed step of size ``eps``, ``(N, C, H, W)``."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, mode=mode)


def margin_loss(logits: torch.Tensor, y: torch.Tensor, kappa: float = float("inf")) -> torch.Tensor:
    """Carlini-Wagner margin ``min(max_{j != y} z_j - z_y, kappa)`` per example, ``(N,)`` from logits ``(N, K)``.

    Positive exactly when the example is misclassified; ``kappa`` caps it (Carlini & Wagner 2017, the confidence
    parameter), so examples already misclassified by more than ``kappa`` stop pulling the attack.
    """
    z_y = logits.gather(1, y.view(-1, 1)).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return torch.clamp(others.amax(1) - z_y, max=kappa)


def cw_linf(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    eps: float, step_size: float, steps: int, kappa: float = 0.0, random_start: bool = True,
    generator: torch.Generator | None = None, mode: str = "eval",
) -> torch.Tensor:
    """PGD l_inf on the Carlini-Wagner margin loss (Carlini & Wagner 2017), ``(N, C, H, W)`` in [0, 1].

    Maximises :func:`margin_loss` ``min(max_{j != y} z_j - z_y, kappa)`` with signed steps of ``step_size``,
    projected onto the l_inf ``eps`` ball around ``x`` and clamped to [0, 1]: :func:`pgd` with ``loss="margin"``.
    ``random_start`` begins at a uniform point of the ball drawn from ``generator``; the model runs in ``mode``
    and its previous mode is restored. ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """
    return pgd(
        model, x, y, eps=eps, step_size=step_size, steps=steps, random_start=random_start, generator=generator,
        mode=mode, loss="margin", kappa=kappa,
    )  # fmt: skip


def spsa(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    eps: float, step_size: float = 0.01, steps: int = 20, n_samples: int = 32, delta: float = 0.01,
    betas: tuple[float, float] = (0.9, 0.999), generator: torch.Generator | None = None, mode: str = "eval",
) -> torch.Tensor:
    """Gradient-free SPSA attack (Uesato et al. 2018) on the l_inf ``eps`` ball, ``(N, C, H, W)`` in [0, 1].

    Each step estimates the gradient of the margin loss ``max_{j != y} z_j - z_y`` from ``n_samples`` pairs of
    Rademacher perturbations ``v``: ``mean_v (L(x + delta v) - L(x - delta v)) / (2 delta) * v``, evaluated in
    one batched forward pass of ``N * 2 * n_samples`` inputs (no loop over examples, no autograd, so gradient
    masking does not hide the model's weakness). The estimate drives an Adam ascent step with learning rate
    ``step_size`` (Uesato et al.: lr=0.01, delta=0.01) and ``betas``; the iterate is projected onto the ball and
    clamped to [0, 1]. Perturbations come from ``generator``; the model runs in ``mode`` and is restored.
    ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """
    check_model_batch(model, x, y)
    check_generator(generator)
    n = x.shape[0]
    check_positive(eps, "eps", allow_zero=True)
    check_positive(step_size, "step_size", allow_zero=True)
    check_positive(delta, "delta")
    check_int(steps, "steps", 0)
    check_int(n_samples, "n_samples", 1)
    x = x.detach()
    x_adv = x.clone()
    m = torch.zeros_like(x)
    v = torch.zeros_like(x)
    y_rep = y.repeat_interleave(2 * n_samples)
    with model_mode(model, mode), torch.no_grad(), model_input_errors(model, x):
        for t in range(1, steps + 1):
            signs = torch.randint(0, 2, (n, n_samples, *x.shape[1:]), generator=generator, device=x.device)
            signs = (2 * signs - 1).to(x.dtype)
            probes = x_adv.unsqueeze(1) + delta * torch.cat([signs, -signs], dim=1)  # (N, 2S, C, H, W)
            logits = check_logits(model(probes.flatten(0, 1)), n * 2 * n_samples)
            losses = margin_loss(logits, check_labels(y_rep, y_rep.shape[0], logits.shape[1])).view(n, 2 * n_samples)
            diff = (losses[:, :n_samples] - losses[:, n_samples:]) / (2 * delta)  # (N, S)
            grad = (diff.view(n, n_samples, *([1] * (x.dim() - 1))) * signs).mean(1)
            m = betas[0] * m + (1 - betas[0]) * grad
            v = betas[1] * v + (1 - betas[1]) * grad**2
            m_hat = m / (1 - betas[0] ** t)
            v_hat = v / (1 - betas[1] ** t)
            x_adv = project(x_adv + step_size * m_hat / (v_hat.sqrt() + 1e-8), x, eps, "linf")
    return x_adv


@dataclass
class TransferResult:
    """Outcome of :func:`transfer`, one entry per example.

    ``x_adv`` ``(N, C, H, W)`` in [0, 1]: crafted on the source model; ``source_correct`` and ``target_correct``
    ``(N,)`` bool: whether each model still predicts the label on ``x_adv``. ``source_accuracy`` and
    ``target_accuracy`` are their means.
    """

    x_adv: torch.Tensor
    source_correct: torch.Tensor
    target_correct: torch.Tensor

    @property
    def source_accuracy(self) -> float:
        return float(self.source_correct.float().mean())

    @property
    def target_accuracy(self) -> float:
        return float(self.target_correct.float().mean())

    def __len__(self) -> int:
        return self.x_adv.shape[0]


TRANSFER_ATTACKS: dict[str, Callable[..., torch.Tensor]] = {"pgd": pgd, "fgsm": fgsm, "cw_linf": cw_linf, "spsa": spsa}


def transfer(
    source_model: nn.Module,
    target_model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: str | Callable[..., torch.Tensor] = "pgd",
    mode: str = "eval",
    **attack_kwargs: Any,
) -> TransferResult:
    """Transfer (black-box) attack (Papernot et al. 2017): craft on ``source_model``, evaluate on ``target_model``.

    ``attack`` is one of ``"pgd"``, ``"fgsm"``, ``"cw_linf"``, ``"spsa"`` or a callable
    ``fn(model, x, y, **attack_kwargs) -> x_adv``; ``attack_kwargs`` (``eps``, ``step_size``, ``steps``,
    ``generator`` ...) go to it. Both models are evaluated in ``mode`` and restored. ``x`` float ``(N, C, H, W)``
    in [0, 1], ``y`` int64 ``(N,)``. Returns a :class:`TransferResult`.
    """
    check_model_batch(target_model, x, y)
    if isinstance(attack, str):
        if attack not in TRANSFER_ATTACKS:
            raise ValueError(f"attack: expected one of {', '.join(map(repr, TRANSFER_ATTACKS))}, got {attack!r}")
        attack = TRANSFER_ATTACKS[attack]
    x_adv = attack(source_model, x, y, mode=mode, **attack_kwargs).detach()
    correct = []
    for model in (source_model, target_model):
        with model_mode(model, mode), torch.no_grad(), model_input_errors(model, x):
            correct.append(check_logits(model(x_adv), x.shape[0]).argmax(1) == y)
    return TransferResult(x_adv=x_adv, source_correct=correct[0], target_correct=correct[1])
