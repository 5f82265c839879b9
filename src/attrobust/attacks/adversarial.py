"""Attacks on the prediction.

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, the model returns logits
``(N, K)``; budgets (``eps``, ``step_size``) are in pixel units; results are ``(N, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_labels
from .pgd import model_mode, pgd_loop, random_point


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    mode: str = "eval",
) -> torch.Tensor:
    """Projected gradient descent on the cross-entropy loss (Madry et al. 2018), ``(N, C, H, W)``.

    ``norm`` is ``"linf"`` (signed steps) or ``"l2"`` (normalised steps); ``random_start`` begins at a uniform
    point of the eps ball drawn from ``generator``. The model runs in ``mode`` (``"eval"`` by default, as
    standard PGD evaluations do; ``"train"`` or ``"keep"``) and its previous mode is restored.
    """
    check_images(x)
    check_labels(y, x.shape[0])
    start = random_point(x, eps, norm, generator) if random_start else None

    def loss(x_adv: torch.Tensor) -> torch.Tensor:
        logits = model(x_adv)
        return F.cross_entropy(logits, check_labels(y, x.shape[0], logits.shape[1]), reduction="none")

    with model_mode(model, mode):
        return pgd_loop(loss, x, eps=eps, step_size=step_size, steps=steps, norm=norm, x_init=start)


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    mode: str = "eval",
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015): one signed step of size ``eps``, ``(N, C, H, W)``."""
    return pgd(model, x, y, eps=eps, step_size=eps, steps=1, random_start=False, mode=mode)
