"""Attacks on attributions.

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; the model returns logits; budgets
are in pixel units; maps for ranking are ``saliency_map(a)`` = ``|a|`` summed over channels, ``(N, H*W)``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import (
    check_choice,
    check_images,
    check_int,
    check_k,
    check_labels,
    check_positive,
    check_second_order,
    warn_if_training,
)
from .._ranking import kendall_tau, saliency_map, topk_intersection
from ..attributions import get_attribution, integrated_gradients
from ..models import softplus
from .pgd import model_mode, pgd_loop, random_point

DISSIMILARITIES = ("topk", "mass_center", "random")
SELECT_BY = ("kendall", "topk")


@dataclass
class IFIAResult:
    """Outcome of :func:`ifia`, one entry per example.

    ``x_adv`` ``(N, C, H, W)``: the selected perturbed input (the clean input where no step was valid);
    ``topk`` and ``kendall`` ``(N,)``: top-k intersection and Kendall tau-b between the clean and the selected
    perturbed saliency maps of the original model (1.0 where no step was valid, the papers' convention);
    ``valid`` ``(N,)`` bool: some step kept the label; ``step`` ``(N,)`` int64: the selected step (1-based, -1 when
    none); ``restart`` ``(N,)`` int64: the restart it came from (-1 when none).
    """

    x_adv: torch.Tensor
    topk: torch.Tensor
    kendall: torch.Tensor
    valid: torch.Tensor
    step: torch.Tensor
    restart: torch.Tensor

    def __len__(self) -> int:
        return self.x_adv.shape[0]


def _attribution_fn(name: str, ig_steps: int, options: dict | None) -> Callable[..., torch.Tensor]:
    fn = get_attribution(name)
    kwargs = dict(options or {})
    if fn is integrated_gradients:
        kwargs.setdefault("steps", ig_steps)
    return functools.partial(fn, **kwargs)


def _centre(m: torch.Tensor, width: int) -> torch.Tensor:
    """Centre of mass ``(N, 2)`` (row, column) of non-negative maps ``(N, H*W)`` of images ``width`` wide."""
    idx = torch.arange(m.shape[1], device=m.device, dtype=m.dtype)
    coords = torch.stack([torch.div(idx, width, rounding_mode="floor"), idx % width], dim=1)
    return (m / (m.sum(1, keepdim=True) + 1e-12)) @ coords


def _dissimilarity(
    kind: str,
    attr: Callable[..., torch.Tensor],
    surrogate: nn.Module,
    y: torch.Tensor,
    clean_map: torch.Tensor,
    top_idx: torch.Tensor,
    width: int,
    generator: torch.Generator | None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-example quantity ``(N,)`` that each IFIA step ascends (Ghorbani et al. 2019, section 3).

    ``topk``: minus the mass of the normalised surrogate map on the clean top-k pixels; ``mass_center``: the l2
    distance between the surrogate map's centre of mass and the clean one; ``random``: a fresh random linear
    function per step, so the signed step is a random sign perturbation (the paper's baseline).
    """
    if kind == "random":
        return lambda x_adv: (
            (x_adv * torch.randn(x_adv.shape, generator=generator, device=x_adv.device)).flatten(1).sum(1)
        )

    def surrogate_map(x_adv: torch.Tensor) -> torch.Tensor:
        return saliency_map(attr(surrogate, x_adv, y, create_graph=True))

    if kind == "mass_center":
        clean_centre = _centre(clean_map, width)
        return lambda x_adv: (_centre(surrogate_map(x_adv), width) - clean_centre).norm(dim=1)

    def topk_mass(x_adv: torch.Tensor) -> torch.Tensor:
        m = surrogate_map(x_adv)
        return -(m / (m.sum(1, keepdim=True) + 1e-12)).gather(1, top_idx).sum(1)

    return topk_mass


def ifia(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    k: int,
    eps: float,
    step_size: float,
    steps: int,
    attribution: str = "ig",
    beta: float | None = None,
    dissimilarity: str = "topk",
    ig_steps: int = 50,
    attribution_options: dict | None = None,
    restarts: int = 1,
    random_start: bool = False,
    select_by: str = "kendall",
    generator: torch.Generator | None = None,
    mode: str = "eval",
    progress: bool = False,
) -> IFIAResult:
    """Iterative feature-importance attack (Ghorbani et al. 2019), batched over examples.

    Each step moves ``x`` by ``step_size * sign(grad)`` of a dissimilarity computed on the (softplus(``beta``)
    surrogate's) saliency map, projects onto the l_inf ``eps`` ball and clamps to [0, 1]. ``dissimilarity``:
    ``"topk"`` lowers the mass of the normalised map on the ORIGINAL top-``k`` pixels; ``"mass_center"`` moves the
    map's centre of mass away from the clean one; ``"random"`` takes random sign steps (the paper's baseline; no
    second derivatives, so no ``beta`` needed). After every step the ORIGINAL model judges the iterate: a step
    whose prediction differs from ``y`` can never be selected; among label-preserving steps the one with the
    lowest ``select_by`` score (Kendall tau-b or top-k intersection with the clean map) is kept. ``restarts`` runs
    the attack again (restart 0 from ``x`` unless ``random_start``; later ones from a uniform point of the ball
    drawn from ``generator``) and keeps the worst case. ``attribution`` names a registered method (``"ig"`` with
    ``ig_steps`` path points by default). A ReLU model needs ``beta`` (its second derivatives vanish).

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; returns an :class:`IFIAResult` of
    per-example tensors.
    """
    check_images(x)
    n = x.shape[0]
    check_labels(y, n)
    check_choice(dissimilarity, "dissimilarity", DISSIMILARITIES)
    check_choice(select_by, "select_by", SELECT_BY)
    check_k(k, x.shape[2] * x.shape[3])
    if dissimilarity != "random":
        check_second_order(model, beta, "ifia")
    check_int(steps, "steps")  # with no step nothing is selected: every example would read as similarity 1
    if eps > 0:  # a zero step never leaves x (unless started randomly): similarity 1 for an unexplored budget
        check_positive(step_size, "step_size (with eps > 0)")
    check_int(restarts, "restarts")
    warn_if_training(model)
    attr = _attribution_fn(attribution, ig_steps, attribution_options)

    with model_mode(model, mode):
        surrogate = model if beta is None else softplus(model, beta)
        clean_map = saliency_map(attr(model, x, y))
        top_idx = clean_map.topk(k, dim=1).indices
        best = {
            "score": torch.full((n,), float("inf"), device=x.device),
            "x_adv": x.detach().clone(),
            "topk": torch.ones(n, device=x.device),
            "kendall": torch.ones(n, device=x.device),
            "step": torch.full((n,), -1, dtype=torch.int64, device=x.device),
            "restart": torch.full((n,), -1, dtype=torch.int64, device=x.device),
        }

        objective = _dissimilarity(dissimilarity, attr, surrogate, y, clean_map, top_idx, x.shape[-1], generator)

        bar = tqdm(total=restarts * steps, desc="IFIA", disable=not progress, leave=False)
        for r in range(restarts):

            def judge(t: int, x_t: torch.Tensor, r: int = r) -> None:
                with torch.no_grad():
                    keeps_label = model(x_t).argmax(1) == y
                m_t = saliency_map(attr(model, x_t, y))
                tk = topk_intersection(clean_map, m_t, k).to(best["topk"].dtype)
                kd = kendall_tau(clean_map, m_t).to(best["kendall"].dtype)
                better = keeps_label & ((kd if select_by == "kendall" else tk) < best["score"])
                for key, value in (("score", kd if select_by == "kendall" else tk), ("topk", tk), ("kendall", kd)):
                    best[key] = torch.where(better, value, best[key])
                best["x_adv"] = torch.where(better.view(-1, 1, 1, 1), x_t, best["x_adv"])
                best["step"] = torch.where(better, torch.full_like(best["step"], t), best["step"])
                best["restart"] = torch.where(better, torch.full_like(best["restart"], r), best["restart"])
                bar.update(1)

            start = random_point(x, eps, "linf", generator) if (random_start or r > 0) else None
            pgd_loop(objective, x, eps=eps, step_size=step_size, steps=steps, x_init=start, callback=judge)
        bar.close()

    return IFIAResult(
        x_adv=best["x_adv"],
        topk=best["topk"],
        kendall=best["kendall"],
        valid=best["step"] >= 0,
        step=best["step"],
        restart=best["restart"],
    )
