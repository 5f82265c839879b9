"""The one place that calls ``torch.autograd.grad``.

Every attribution, attack and objective that needs a gradient goes through :func:`gradient` (gradients of a
model's per-example target outputs w.r.t. its input) or :func:`grad_of` (gradient of any scalar). Both decide in
one spot whether the result keeps its graph (``create_graph=True``: differentiable w.r.t. the input and the
parameters, as needed by IG-NORM, ART, IGR and every attribution attack) or is detached.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_labels

TARGET_KINDS = ("logit", "probability", "loss")


def grad_of(
    output: torch.Tensor, inputs: torch.Tensor, *, create_graph: bool = False, retain_graph: bool | None = None
) -> torch.Tensor:
    """Gradient of the scalar ``output`` w.r.t. ``inputs`` (same shape as ``inputs``).

    With ``create_graph=False`` the result is detached; unused inputs give zeros instead of an error.
    ``retain_graph`` (default: ``create_graph``) keeps the graph of ``output`` for further gradients, e.g. several
    Hessian-vector products of one first-order gradient.
    """
    (g,) = torch.autograd.grad(
        output, inputs, create_graph=create_graph, retain_graph=retain_graph, allow_unused=True
    )
    if g is None:
        return torch.zeros_like(inputs)
    return g if create_graph else g.detach()


def target_output(logits: torch.Tensor, target: torch.Tensor, kind: str = "logit") -> torch.Tensor:
    """Per-example scalar whose input gradient is the attribution: ``(N, K)`` logits -> ``(N,)``.

    ``kind``: ``"logit"`` (the target class's logit, the papers' default), ``"probability"`` (its softmax
    probability) or ``"loss"`` (cross-entropy of the target class, as in IG-NORM's attribution of the loss).
    """
    check_choice(kind, "output", TARGET_KINDS)
    check_labels(target, logits.shape[0], logits.shape[1], name="target")
    if kind == "loss":
        return F.cross_entropy(logits, target, reduction="none")
    scores = F.softmax(logits, dim=1) if kind == "probability" else logits
    return scores.gather(1, target[:, None]).squeeze(1)


def gradient(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    create_graph: bool = False,
    output: str = "logit",
) -> torch.Tensor:
    """Input gradient of each example's target output: ``(N, C, H, W) -> (N, C, H, W)``.

    Examples are independent (the model must not mix examples, i.e. be in eval mode or use no batch
    statistics), so the gradient of the sum is each example's gradient. ``x`` keeps its graph when
    ``create_graph=True`` and it requires grad, so the result is differentiable w.r.t. ``x`` and the parameters.
    Neither ``model.training`` nor any ``requires_grad`` flag is changed.
    """
    with torch.enable_grad():
        xi = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        out = target_output(model(xi), target, output)
        return grad_of(out.sum(), xi, create_graph=create_graph)
