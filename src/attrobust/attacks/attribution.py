"""Attacks on attributions.

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; the model returns logits; budgets
are in pixel units; maps for ranking are ``saliency_map(a)`` = ``|a|`` summed over channels, ``(N, H*W)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from .._checks import (
    check_choice,
    check_generator,
    check_int,
    check_k,
    check_logits,
    check_model_batch,
    check_positive,
    check_second_order,
    model_input_errors,
    warn_if_training,
    warn_once,
)
from .._ranking import kendall_tau, saliency_map, topk_intersection
from ..attributions import explainer
from ..models import softplus
from .pgd import model_mode, pgd_loop, random_point
from .selection import Best

DISSIMILARITIES = ("topk", "mass_center", "random")
SELECT_BY = ("kendall", "topk")
RESTART_FROM = ("random", "clean")
FLAT_START = (
    "IFIA top-k from the clean image: some images have at most k non-zero pixels in their attribution map (e.g. "
    "IG with a black baseline on a thin MNIST digit: IG is exactly 0 on black pixels); there the normalised top-k "
    "mass is already 1 and its gradient is 0 up to rounding, so whether the attack leaves the clean image depends on "
    "rounding noise (it can differ with the batch's other images) and a stuck image reads as top-k 1. "
    "A random start (random_start=True, restart_from='random') avoids the flat point; "
    "attrobust.attacks.ifia_flat_start(...) says which images are affected"
)


@dataclass
class IFIAResult:
    """Outcome of :func:`ifia`, one entry per example.

    ``x_adv`` ``(N, C, H, W)``: the selected perturbed input (the clean input where no step was valid);
    ``topk`` and ``kendall`` ``(N,)``: top-k intersection and Kendall tau-b between the clean and the selected
    perturbed saliency maps of the original model (1.0 where no step was valid, the papers' convention);
    ``valid`` ``(N,)`` bool: some step kept the label; ``step`` ``(N,)`` int64: the selected step (1-based, -1 when
    none); ``restart`` ``(N,)`` int64: the restart it came from (-1 when none); ``flat_start`` ``(N,)`` bool: the
    top-k attack ran from the clean image only and its clean map has at most ``k`` non-zero pixels, so the
    objective was flat there and the image moved by rounding noise at best (:func:`ifia_flat_start`; False for
    the other dissimilarities and wherever some run started from a random point).
    """

    x_adv: torch.Tensor
    topk: torch.Tensor
    kendall: torch.Tensor
    valid: torch.Tensor
    step: torch.Tensor
    restart: torch.Tensor
    flat_start: torch.Tensor

    def __len__(self) -> int:
        return self.x_adv.shape[0]


def _centre(m: torch.Tensor, width: int) -> torch.Tensor:
    """Centre of mass ``(N, 2)`` (row, column) of non-negative maps ``(N, H*W)`` of images ``width`` wide."""
    idx = torch.arange(m.shape[1], device=m.device, dtype=m.dtype)
    coords = torch.stack([torch.div(idx, width, rounding_mode="floor"), idx % width], dim=1)
    return (m / (m.sum(1, keepdim=True) + 1e-12)) @ coords


def _flat_start(clean_map: torch.Tensor, k: int) -> torch.Tensor:
    """``(N,)`` bool: the clean map ``(N, D)`` has at most ``k`` non-zero pixels, where the top-k objective is flat
    (the normalised mass on the clean top-k is 1, the smallest objective, and abs' derivative at 0 is 0 on every
    other pixel). The surrogate's map has the same zeros wherever they come from the image (IG and input x gradient
    are 0 on black pixels with the black baseline)."""
    return (clean_map != 0).sum(1) <= k


def _flat_starts(clean_map: torch.Tensor, k: int, topk_from_clean: bool) -> torch.Tensor:
    """``IFIAResult.flat_start`` ``(N,)`` bool of an attack whose clean maps are ``clean_map`` ``(N, D)``: the
    flat points of :func:`_flat_start` when every run of a top-k attack starts from the clean image
    (``topk_from_clean``), else all False; warns (:data:`FLAT_START`, once per process) when any is True."""
    flat = _flat_start(clean_map, k) if topk_from_clean else torch.zeros(len(clean_map), dtype=torch.bool,
                                                                         device=clean_map.device)  # fmt: skip
    if flat.any():
        warn_once(FLAT_START, RuntimeWarning)
    return flat


def ifia_flat_start(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, k: int, attribution: str = "ig", ig_steps: int = 50,
) -> torch.Tensor:
    """Which images start IFIA's top-k attack (:func:`ifia`, ``dissimilarity="topk"``) at a flat point: ``(N,)``
    bool, True where the ``attribution`` map of the clean image has at most ``k`` non-zero pixels. There the
    normalised mass on the clean top-k is 1 and its gradient vanishes (up to rounding), so an attack from the clean
    image moves by rounding noise, or not at all (top-k 1 kept).

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; returns ``(N,)`` bool.
    """
    check_model_batch(model, x, y)
    check_k(k, x.shape[2] * x.shape[3])
    with model_mode(model, "eval"), model_input_errors(model, x):
        clean_map = saliency_map(explainer(attribution, ig_steps=ig_steps)(model, x, y))
    return _flat_start(clean_map, k)


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
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    k: int, eps: float, step_size: float, steps: int, attribution: str = "ig", beta: float | None = None,
    dissimilarity: str = "topk", ig_steps: int = 50, attribution_options: dict | None = None, restarts: int = 1,
    random_start: bool = False, select_by: str = "kendall", generator: torch.Generator | None = None,
    mode: str = "eval", progress: bool = False, eval_k: int | None = None, restart_from: str = "random",
) -> IFIAResult:
    """Iterative feature-importance attack (Ghorbani et al. 2019), batched over examples.

    Each step moves ``x`` by ``step_size * sign(grad)`` of a dissimilarity computed on the (softplus(``beta``)
    surrogate's) saliency map, projects onto the l_inf ``eps`` ball and clamps to [0, 1]. ``dissimilarity``:
    ``"topk"`` lowers the mass of the normalised map on the ORIGINAL top-``k`` pixels; ``"mass_center"`` moves the
    map's centre of mass away from the clean one; ``"random"`` takes random sign steps (the paper's baseline; no
    second derivatives, so no ``beta`` needed). After every step the ORIGINAL model judges the iterate: a step
    whose prediction differs from ``y`` can never be selected; among label-preserving steps the one with the
    lowest ``select_by`` score (Kendall tau-b or top-``k`` intersection with the clean map) is kept. ``restarts``
    runs the attack again and keeps the worst case: restart 0 starts from ``x`` unless ``random_start``; later
    ones, with ``restart_from="random"`` (the default), from a uniform point of the ball drawn from
    ``generator``, with ``"clean"`` from ``x`` again (the RAR paper's three runs, which differ only by GPU
    non-determinism: on a deterministic device they repeat the first run). ``eval_k`` (default ``k``) is the size
    of the reported top-k intersection (RAR attacks MNIST with k 200 and reports the top-100 intersection); as in
    the RAR reference code, ``select_by="topk"`` selects by the attack's top-``k`` intersection, the quantity the
    attack lowers. ``attribution`` names a registered method (``"ig"`` with ``ig_steps`` path points by
    default). A ReLU model needs ``beta`` (its second derivatives vanish). ``topk`` with every run from the clean
    image warns (:data:`FLAT_START`, once per process) when an image's clean map has at most ``k`` non-zero
    pixels: the objective is flat there and the attack moves by rounding noise or not at all
    (:func:`ifia_flat_start`); the result's ``flat_start`` marks those images.

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; returns an :class:`IFIAResult` of
    per-example tensors.
    """
    check_model_batch(model, x, y)
    check_generator(generator)
    check_choice(dissimilarity, "dissimilarity", DISSIMILARITIES)
    check_choice(select_by, "select_by", SELECT_BY)
    check_k(k, x.shape[2] * x.shape[3])
    eval_k = k if eval_k is None else check_k(eval_k, x.shape[2] * x.shape[3], "eval_k")
    check_choice(restart_from, "restart_from", RESTART_FROM)
    if dissimilarity != "random":
        check_second_order(model, beta, "ifia")
    check_int(steps, "steps")  # with no step nothing is selected: every example would read as similarity 1
    if eps > 0:  # a zero step never leaves x (unless started randomly): similarity 1 for an unexplored budget
        check_positive(step_size, "step_size (with eps > 0)")
    check_int(restarts, "restarts")
    warn_if_training(model)
    options = dict(attribution_options or {})  # a random method draws from ``generator`` unless given its own
    attr = explainer(attribution, ig_steps=ig_steps, generator=options.pop("generator", generator), **options)

    with model_mode(model, mode), model_input_errors(model, x):
        surrogate = model if beta is None else softplus(model, beta)
        clean_map = saliency_map(attr(model, x, y))
        top_idx = clean_map.topk(k, dim=1).indices
        from_clean = not random_start and (restarts == 1 or restart_from == "clean")  # every run from x
        flat = _flat_starts(clean_map, k, dissimilarity == "topk" and from_clean)
        objective = _dissimilarity(dissimilarity, attr, surrogate, y, clean_map, top_idx, x.shape[-1], generator)
        n, ones = x.shape[0], torch.ones(x.shape[0], device=x.device)
        none = torch.full((n,), -1, dtype=torch.int64, device=x.device)  # step and restart: none selected
        best = Best.start(n, x.device, x_adv=x.detach().clone(), topk=ones, kendall=ones, step=none, restart=none)
        bar = tqdm(total=restarts * steps, desc="IFIA", disable=not progress, leave=False)
        for r in range(restarts):

            def judge(t: int, x_t: torch.Tensor, r: int = r) -> None:
                with torch.no_grad():
                    keeps_label = check_logits(model(x_t), n).argmax(1) == y
                m_t = saliency_map(attr(model, x_t, y))
                tk = topk_intersection(clean_map, m_t, eval_k).to(ones.dtype)
                kd = kendall_tau(clean_map, m_t).to(ones.dtype)
                if select_by == "kendall":
                    score = kd
                else:  # the attack's k, as the reference code selects; the reported eval_k when they agree
                    score = tk if eval_k == k else topk_intersection(clean_map, m_t, k).to(ones.dtype)
                best.update(score, keeps_label, topk=tk, kendall=kd, x_adv=x_t, step=t, restart=r)
                bar.update(1)

            from_random = random_start or (r > 0 and restart_from == "random")
            start = random_point(x, eps, "linf", generator) if from_random else None
            pgd_loop(objective, x, eps=eps, step_size=step_size, steps=steps, x_init=start, callback=judge)
        bar.close()
    return IFIAResult(valid=best["step"] >= 0, flat_start=flat, **best.kept)
