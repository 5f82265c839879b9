"""Targeted manipulation of attribution maps (Dombrowski et al. 2019, "Explanations can be manipulated and
geometry is to blame").

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, the model returns logits ``(N, K)``;
target maps are ``(N, H*W)`` saliency maps (or ``(N, C, H, W)`` attributions, reduced with ``saliency_map``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._checks import (
    check_choice,
    check_generator,
    check_int,
    check_logits,
    check_model_batch,
    check_positive,
    model_input_errors,
    warn_if_training,
)
from .._ranking import kendall_tau, saliency_map, topk_intersection
from ..attributions import explainer, grad_of
from ..models import softplus
from .pgd import model_mode, project
from .selection import Best

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
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, target_map: torch.Tensor | str = "shuffle", *,
    attribution: str = "saliency", ig_steps: int = 10, steps: int = 300, lr: float = 1e-3, weight_map: float = 1.0,
    weight_out: float = 10.0, beta_start: float = 10.0, beta_end: float = 100.0, eps: float | None = None, k: int = 100,
    restarts: int = 1, generator: torch.Generator | None = None, mode: str = "eval", progress: bool = False,
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
    check_model_batch(model, x, y)
    check_generator(generator)
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
    attr = explainer(attribution, ig_steps=ig_steps, generator=generator)

    with model_mode(model, mode), model_input_errors(model, x):
        clean = saliency_map(attr(model, x, y))
        with torch.no_grad():
            clean_prob = F.softmax(check_logits(model(x), x.shape[0]), dim=1)
        target = _target_maps(target_map, clean, generator)
        target_n = _normalised(target.detach())
        betas = [beta_start * (beta_end / beta_start) ** (t / max(steps - 1, 1)) for t in range(steps)]
        descent = _Descent(attr, target_n, clean_prob, tuple(betas), lr, (weight_map, weight_out), eps)
        none = torch.full((x.shape[0],), -1, dtype=torch.int64, device=x.device)
        best = Best.start(x.shape[0], x.device, x_adv=x.detach().clone(), step=none)
        bar = tqdm(total=restarts * steps, desc="manipulation", disable=not progress, leave=False)
        for r in range(restarts):
            for t, x_new in _descend(model, x, y, _start(x, r, eps, generator), descent):
                with torch.no_grad():
                    keeps = check_logits(model(x_new), x.shape[0]).argmax(1) == y
                mse = (_normalised(saliency_map(attr(model, x_new, y))) - target_n).pow(2).mean(1)
                best.update(mse, keeps, x_adv=x_new, step=t)
                bar.update(1)
        bar.close()
        valid = best["step"] >= 0
        final = saliency_map(attr(model, best["x_adv"], y))
        topk = torch.where(valid, topk_intersection(clean, final, min(k, clean.shape[1])).to(best.score.dtype), 1.0)
        kendall = torch.where(valid, kendall_tau(clean, final).to(best.score.dtype), 1.0)
        clean_mse = (_normalised(clean) - target_n).pow(2).mean(1)
    return ManipulationResult(
        x_adv=best["x_adv"], target_map=target.detach(), target_mse=torch.where(valid, best.score, clean_mse),
        topk=topk, kendall=kendall, valid=valid, step=best["step"],
    )  # fmt: skip


def _target_maps(
    target_map: torch.Tensor | str, clean: torch.Tensor, generator: torch.Generator | None
) -> torch.Tensor:
    """The maps ``(N, H*W)`` aimed at: ``"shuffle"`` (another example's clean map) or the given maps / attributions."""
    if isinstance(target_map, str):
        check_choice(target_map, "target_map", TARGETS)
        return shuffled_targets(clean, generator)
    target = saliency_map(target_map) if target_map.dim() == 4 else target_map
    if tuple(target.shape) != tuple(clean.shape):
        raise ValueError(
            f"target_map: expected shape {tuple(clean.shape)} (or the input's), got {tuple(target_map.shape)}"
        )
    return target


def _start(x: torch.Tensor, restart: int, eps: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """Restart 0 starts at ``x``; later ones (which need ``eps``) at a uniform point of the l_inf ball, clamped."""
    if restart > 0 and eps is not None:
        u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return (x + (2 * u - 1) * eps).clamp(0, 1)
    return x.detach().clone()


@dataclass(frozen=True)
class _Descent:
    """One run of the manipulation: the attribution, the normalised target maps ``(N, H*W)``, the clean
    probabilities ``(N, K)`` to keep, the softplus beta of each step, Adam's learning rate, the loss weights
    ``(weight_map, weight_out)`` and the optional l_inf radius."""

    attr: Callable[..., torch.Tensor]
    target_n: torch.Tensor
    clean_prob: torch.Tensor
    betas: tuple[float, ...]
    lr: float
    weights: tuple[float, float]
    eps: float | None


def _descend(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, d: _Descent
) -> Iterator[tuple[int, torch.Tensor]]:
    """Adam on ``delta = x' - x`` from ``start``; yields ``(t, x'_t)`` (1-based, clamped / projected) per step."""
    weight_map, weight_out = d.weights
    delta = (start - x).requires_grad_(True)
    opt = torch.optim.Adam([delta], lr=d.lr)
    for t, beta in enumerate(d.betas, start=1):
        smooth = softplus(model, beta)
        with torch.enable_grad():
            x_cur = x + delta
            h = _normalised(saliency_map(d.attr(smooth, x_cur, y, create_graph=True)))
            loss = weight_map * (h - d.target_n).pow(2).mean(1)
            loss = loss + weight_out * (F.softmax(smooth(x_cur), dim=1) - d.clean_prob).pow(2).mean(1)
            delta.grad = grad_of(loss.sum(), delta)
        opt.step()
        with torch.no_grad():
            x_new = x + delta
            x_new = project(x_new, x, d.eps, "linf") if d.eps is not None else x_new.clamp(0, 1)
            delta.copy_(x_new - x)
        yield t, x_new
