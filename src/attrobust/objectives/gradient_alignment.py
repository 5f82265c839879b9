"""Attributional Robustness Training (Singh et al., "Attributional Robustness Training using Input-Gradient
Spatial Alignment", ECCV 2020: the ART paper).

A triplet loss on input-gradient maps of a Softplus copy of the model, maximised in the eps ball and added to the
cross-entropy at the maximiser. Conventions (reductions, batch norm) are those of the attribution objectives,
stated in :mod:`attrobust.objectives`.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..attributions import gradient
from ..models import eval_norm, softplus
from ._base import (
    OBJECTIVES,
    AdversarialResult,
    BudgetedObjective,
    accuracy,
    check_beta,
    check_weight,
    logits_of,
    objective_dataclass,
)


def runner_up(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``i* = argmax_{i ≠ y} logits_i`` per row: ``(N, K), (N,) -> (N,)`` int64 (needs K >= 2)."""
    if logits.shape[1] < 2:
        raise ValueError(f"logits: expected at least 2 classes for a runner-up class, got {logits.shape[1]}")
    masked = logits.detach().scatter(1, y[:, None], float("-inf"))
    return masked.argmax(1)


def art_triplet(smooth: nn.Module, x: torch.Tensor, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """ART's attribution loss (ART paper eq. 5), per example ``(N,)``:
    ``log(1 + exp(-(d(g^{i*}(x), x) - d(g^y(x), x))))`` with ``d(g, x) = 1 - g·x / (‖g‖_2 ‖x‖_2)``.

    ``g^i(x) = ∇_x f_i(x)`` is the input gradient of logit ``i`` of ``smooth`` (the Softplus copy), computed with
    its graph so the loss is differentiable w.r.t. ``x`` and the parameters; ``other`` holds ``i*`` ``(N,)``.
    Both gradients come from one forward/backward pass over ``[x; x]``.
    """
    n = x.shape[0]
    pair = torch.cat([x, x])
    g = gradient(smooth, pair, torch.cat([y, other]), create_graph=True).flatten(1)
    distance = 1.0 - F.cosine_similarity(g, pair.flatten(1), dim=1, eps=1e-12)
    return F.softplus(-(distance[n:] - distance[:n]))


@OBJECTIVES.register("art")
@objective_dataclass
class ART(BudgetedObjective):
    """Attributional Robustness Training (ART paper eq. 5-6, Algorithm 1):
    ``CE(f(x~), y) + lam * L_attr(x~, y)`` with ``x~ = argmax_{‖δ‖_∞ ≤ eps} L_attr(x + δ, y)``.

    ``L_attr`` is :func:`art_triplet`: a soft-margin triplet loss with the image as anchor, the gradient map of
    the true class as positive and that of the runner-up class ``i* = argmax_{i≠y} f_i`` as negative, on the
    cosine distance. Gradient maps (and so ``L_attr``) use ``softplus(model, beta)`` for its second derivative;
    the cross-entropy follows the ReLU path (the model itself). ``i*`` is taken from the model's logits at the
    point being scored (each inner iterate, then ``x~``). The inner maximisation starts uniformly in the eps ball
    (Algorithm 1, line 4) and takes ``steps`` signed steps of ``step_size``. Defaults: the paper's CIFAR-10
    setting (lam 0.5, beta 50, eps 8/255, 3 steps of 1.5/255).

    Modes: the CE follows the model's mode (as the reference code); the inner search (``L_attr`` alone),
    ``L_attr`` and ``i*`` run in ``eval_norm`` (the reference code used the statistics of its ``[x; x~]`` batch).

    Reduction: per-example terms averaged over the batch. Logs: ``loss``, ``acc`` (on ``x~``), ``ce``,
    ``attr`` (mean ``L_attr``), ``eps``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64
    ``(N,)``, at least 2 classes.
    """

    name: ClassVar[str] = "art"
    lam: float = 0.5
    beta: float = 50.0
    eps: float = 8 / 255
    step_size: float = 1.5 / 255
    steps: int = 3
    random_start: bool = True

    def check(self) -> None:
        self._set_field("lam", check_weight(self.lam, f"{self.name} lam"))
        check_beta(self.beta, f"{self.name} beta")

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        smooth = softplus(model, self.beta)

        def inner_loss(xa: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                other = runner_up(logits_of(model, xa, y), y)
            return art_triplet(smooth, xa, y, other)

        with eval_norm(model), eval_norm(smooth):
            x_adv = self.budget.search(inner_loss, x, self.scale, generator)
        logits = logits_of(model, x_adv, y)
        ce = F.cross_entropy(logits, y)
        with eval_norm(model) as switched, eval_norm(smooth):
            per_example = logits
            if switched:  # the CE's logits used batch statistics: i* comes from the per-example logits
                with torch.no_grad():
                    per_example = logits_of(model, x_adv, y)
            attr = art_triplet(smooth, x_adv, y, runner_up(per_example, y)).mean()
        loss = ce + self.lam * attr
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                "attr": float(attr.detach()), "eps": self.eps * self.scale}  # fmt: skip
        return loss, logs, x_adv


art = ART
