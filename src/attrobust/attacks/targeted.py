"""Targeted manipulation of attribution maps (Dombrowski et al. 2019, "Explanations can be manipulated and
geometry is to blame").

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, the model returns logits ``(N, K)``;
target maps are ``(N, H*W)`` saliency maps (or ``(N, C, H, W)`` attributions, reduced with ``saliency_map``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._checks import check_choice, check_images, check_int, check_labels, check_positive, warn_if_training
from .._ranking import kendall_tau, saliency_map, topk_intersection
from ..attributions import grad_of
from ..models import softplus
from .attribution import _attribution_fn
from .pgd import model_mode, project

TARGETS = ("shuffle",)


@dataclass
class ManipulationResult:
    """Outcome of :func:`targeted_manipulation`, one entry per example.

    ``x_adv`` ``(N, C, H, W)``: the selected input (the clean one where no step kept the label); ``target_map``
    ``(N, H*W)``: the map that was aimed at; ``target_mse`` ``(N,)``: mean squared error between the selected
    input's normalised map (original model) and the normalised target; ``topk`` / ``kendall`` ``(N,)``: top-k
    intersection and Kendall tau-b between the clean and selected maps of the original model (1.0 where no step
    was valid); ``valid`` ``(N,)`` bool; ``step`` ``(N,)`` int64 (1-based, -1 when none).
    """

    x_adv: torch.Tensor
    target_map: torch.Tensor
    target_mse: torch.Tensor
    topk: torch.Tensor
    kendall: torch.Tensor
    valid: torch.Tensor
    step: torch.Tensor


def _normalised(m: torch.Tensor) -> torch.Tensor:
    """Maps ``(N, D)`` scaled to mean 1 per row (sum D), so distances do not depend on the map's scale or size."""
    return m * (m.shape[1] / (m.sum(1, keepdim=True) + 1e-12))


def shuffled_targets(maps: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Target maps from a random derangement of the batch: row i gets the map of another example ``(N, D)``.

    This is how the ART paper (section 5) evaluates the targeted attack: each image is pushed towards the
    attribution of a different, randomly chosen test image. Needs N >= 2.
    """
    n = maps.shape[0]
    if n < 2:
        raise ValueError(f"target_map='shuffle': expected a batch of at least 2 examples, got {n}")
    shift = torch.randint(1, n, (1,), generator=generator, device=maps.device)
    order = torch.randperm(n, generator=generator, device=maps.device)
    partner = torch.empty_like(order)
    partner[order] = order.roll(int(shift))  # a cyclic shift of a random order has no fixed point
    return maps[partner]


def targeted_manipulation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    target_map: torch.Tensor | str = "shuffle",
    *,
    attribution: str = "saliency",
    ig_steps: int = 10,
    steps: int = 300,
    lr: float = 1e-3,
    weight_map: float = 1.0,
    weight_out: float = 10.0,
    beta_start: float = 10.0,
    beta_end: float = 100.0,
    eps: float | None = None,
    k: int = 100,
    restarts: int = 1,
    generator: torch.Generator | None = None,
    mode: str = "eval",
    progress: bool = False,
) -> ManipulationResult:
    """Push each example's attribution map towards a target map while keeping the model's output.

    Minimises ``weight_map * MSE(h(x'), h_t) + weight_out * MSE(softmax f(x'), softmax f(x))`` over ``x'`` with
    Adam (learning rate ``lr`` in pixel units), where ``h`` is the mean-1 normalised saliency map of
    ``attribution`` computed on a softplus copy of the model whose ``beta`` grows geometrically from
    ``beta_start`` to ``beta_end`` (Dombrowski et al. 2019, eq. 4 and section 4). Every iterate is clamped to
    [0, 1] and, when ``eps`` is given, projected onto the l_inf ball. The ORIGINAL model judges each step: a step
    whose prediction differs from ``y`` is never selected; among the others the one whose map is closest to the
    target (MSE) is kept. ``restarts`` repeats the attack from uniform points of the ``eps`` ball (needs ``eps``)
    and keeps the closest. ``target_map="shuffle"`` takes another example's clean map (the ART paper's protocol).

    Shapes: ``x`` ``(N, C, H, W)``; ``target_map`` ``(N, H*W)`` or ``(N, C, H, W)``; returns a
    :class:`ManipulationResult` of per-example tensors.
    """
    check_images(x)
    n = x.shape[0]
    check_labels(y, n)
    for name, value in (("lr", lr), ("beta_start", beta_start), ("beta_end", beta_end)):
        check_positive(value, name)
    check_positive(weight_map, "weight_map", allow_zero=True)
    check_positive(weight_out, "weight_out", allow_zero=True)
    check_int(steps, "steps")
    if not isinstance(restarts, int) or restarts < 1 or (restarts > 1 and eps is None):
        raise ValueError(f"restarts: expected 1, or an integer >= 1 together with eps, got {restarts!r} (eps={eps})")
    if eps is not None:
        check_positive(eps, "eps")
    warn_if_training(model)
    attr = _attribution_fn(attribution, ig_steps, None)

    with model_mode(model, mode):
        clean = saliency_map(attr(model, x, y))
        with torch.no_grad():
            clean_prob = F.softmax(model(x), dim=1)
        if isinstance(target_map, str):
            check_choice(target_map, "target_map", TARGETS)
            target = shuffled_targets(clean, generator)
        else:
            target = saliency_map(target_map) if target_map.dim() == 4 else target_map
            if tuple(target.shape) != tuple(clean.shape):
                raise ValueError(
                    f"target_map: expected shape {tuple(clean.shape)} (or the input's), got {tuple(target_map.shape)}"
                )
        target_n = _normalised(target.detach())
        best_mse = torch.full((n,), float("inf"), device=x.device)
        best_x = x.detach().clone()
        best_step = torch.full((n,), -1, dtype=torch.int64, device=x.device)
        betas = [beta_start * (beta_end / beta_start) ** (t / max(steps - 1, 1)) for t in range(steps)]
        bar = tqdm(total=restarts * steps, desc="manipulation", disable=not progress, leave=False)
        for r in range(restarts):
            x_adv = x.detach().clone()
            if r > 0 and eps is not None:
                u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x_adv = (x + (2 * u - 1) * eps).clamp(0, 1)
            delta = (x_adv - x).requires_grad_(True)
            opt = torch.optim.Adam([delta], lr=lr)
            for t, beta in enumerate(betas, start=1):
                smooth = softplus(model, beta)
                with torch.enable_grad():
                    x_cur = x + delta
                    h = _normalised(saliency_map(attr(smooth, x_cur, y, create_graph=True)))
                    loss = weight_map * (h - target_n).pow(2).mean(1)
                    loss = loss + weight_out * (F.softmax(smooth(x_cur), dim=1) - clean_prob).pow(2).mean(1)
                    delta.grad = grad_of(loss.sum(), delta)
                opt.step()
                with torch.no_grad():
                    x_new = x + delta
                    x_new = project(x_new, x, eps, "linf") if eps is not None else x_new.clamp(0, 1)
                    delta.copy_(x_new - x)
                    keeps = model(x_new).argmax(1) == y
                mse = (_normalised(saliency_map(attr(model, x_new, y))) - target_n).pow(2).mean(1)
                better = keeps & (mse < best_mse)
                best_mse = torch.where(better, mse, best_mse)
                best_x = torch.where(better.view(-1, 1, 1, 1), x_new, best_x)
                best_step = torch.where(better, torch.full_like(best_step, t), best_step)
                bar.update(1)
        bar.close()
        valid = best_step >= 0
        final = saliency_map(attr(model, best_x, y))
        topk = torch.where(valid, topk_intersection(clean, final, min(k, clean.shape[1])).to(best_mse.dtype), 1.0)
        kendall = torch.where(valid, kendall_tau(clean, final).to(best_mse.dtype), 1.0)
        clean_mse = (_normalised(clean) - target_n).pow(2).mean(1)
    return ManipulationResult(
        x_adv=best_x,
        target_map=target.detach(),
        target_mse=torch.where(valid, best_mse, clean_mse),
        topk=topk,
        kendall=kendall,
        valid=valid,
        step=best_step,
    )
