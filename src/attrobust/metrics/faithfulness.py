"""Faithfulness of attribution maps: ROAD (noisy linear imputation), deletion and insertion curves.

A faithful map ranks first the pixels the model relies on: removing them (MoRF, most relevant first) should hurt
the model quickly, removing the least relevant ones first (LeRF) slowly.

- :func:`road` -- "Remove And Debias" (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
  Attribution Methods"): removed pixels are filled by :func:`noisy_linear_impute` so that the perturbed images
  leak no information about *which* pixels were removed (the imputation lives in
  :mod:`attrobust.metrics.imputation` and is re-exported here); the area under the curve follows paper 003
  (feature-map smoothing), section 4.1.
- :func:`deletion` and :func:`insertion` (Petsiuk et al. 2018, RISE): removed pixels set to a baseline value, or
  pixels inserted into a baseline (by default a blurred copy of the image) in order of relevance.

Tensor contract: images ``x`` float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, the model returns logits
``(N, K)``. ``maps`` are attributions ``(N, C', H, W)`` (reduced to ``|a|`` summed over channels, the
:func:`attrobust.metrics.similarity.saliency_map` convention) or maps ``(N, H, W)`` (ranked as given). Every
function returns per-example tensors (curves ``(N, F)``, areas ``(N,)``) on ``x``'s device; aggregation is the
caller's. Pixels are removed in all channels at once. Ties in a map are broken deterministically: among equal
values the pixel with the lower raster index (row-major ``i * W + j``) comes first, for MoRF and LeRF alike.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import kornia.filters as KF
import torch
import torch.nn.functional as F
from torch import nn

from attrobust._checks import (
    check_broadcastable,
    check_choice,
    check_int,
    check_labels,
    check_model_batch,
    check_positive,
    model_logits,
    warn_if_training,
)
from attrobust.metrics.imputation import NEIGHBOUR_WEIGHTS, noisy_linear_impute

ORDERS = ("morf", "lerf")
OUTPUTS = ("accuracy", "probability")
IMPUTATIONS = ("noisy_linear", "constant")
AUC_RULES = ("paper", "trapezoid")

#: Percentages removed by ROAD (Rong et al. 2022 evaluate 10 %, 20 %, ..., 90 %).
ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
#: Deletion / insertion fractions: the whole range, both ends included (Petsiuk et al. 2018).
CURVE_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)

class PerturbationCurve(NamedTuple):
    """Result of :func:`road`, :func:`deletion` and :func:`insertion`, one row per example.

    ``curve`` ``(N, F)``: the model's output (0/1 accuracy or the class probability) at each fraction;
    ``auc`` ``(N,)``: the area under the curve as the function documents it; ``original`` ``(N,)``: the same
    output on the unperturbed images.
    """

    curve: torch.Tensor
    auc: torch.Tensor
    original: torch.Tensor


# --------------------------------------------------------------------------------------------------- ranking


def _as_maps(maps: object, x: torch.Tensor) -> torch.Tensor:
    """Validate ``maps`` for images ``x`` ``(N, C, H, W)`` and return float64 maps ``(N, H * W)``."""
    n, _, h, w = x.shape
    if not isinstance(maps, torch.Tensor):
        raise ValueError(f"maps: expected a torch.Tensor of shape (N, C, H, W) or (N, H, W), got {type(maps).__name__}")
    if maps.dim() == 4:
        if maps.shape[0] != n or maps.shape[2:] != (h, w):
            raise ValueError(f"maps: expected shape ({n}, C, {h}, {w}) to match x, got {tuple(maps.shape)}")
        if not maps.is_floating_point():
            raise ValueError(f"maps: expected a floating-point tensor, got dtype {maps.dtype}")
        maps = maps.detach().abs().sum(1)
    elif maps.dim() == 3:
        if tuple(maps.shape) != (n, h, w):
            raise ValueError(f"maps: expected shape ({n}, {h}, {w}) to match x, got {tuple(maps.shape)}")
        if maps.dtype == torch.bool or maps.is_complex():
            raise ValueError(f"maps: expected a real-valued tensor, got dtype {maps.dtype}")
        maps = maps.detach()
    else:
        raise ValueError(f"maps: expected shape (N, C, H, W) or (N, H, W), got {tuple(maps.shape)}")
    maps = maps.to(torch.float64)
    if not bool(torch.isfinite(maps).all()):
        raise ValueError(f"maps: expected finite values, got {int((~torch.isfinite(maps)).sum())} NaN/inf entries")
    return maps.flatten(1)


def removal_order(maps: torch.Tensor, order: str = "morf") -> torch.Tensor:
    """Pixel indices ``(N, H * W)`` (int64, raster order ``i * W + j``) in the order they are removed.

    ``order="morf"``: most relevant (largest map value) first; ``"lerf"``: least relevant first. ``maps`` is
    ``(N, H, W)`` (ranked as given) or ``(N, C, H, W)`` (``|a|`` summed over channels first). Ties keep raster
    order (stable sort), so the result is deterministic on every device.
    """
    check_choice(order, "order", ORDERS)
    if not isinstance(maps, torch.Tensor) or maps.dim() not in (3, 4):
        got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps: expected a tensor of shape (N, C, H, W) or (N, H, W), got {got}")
    shape = (maps.shape[0], 1, *maps.shape[-2:])
    flat = _as_maps(maps, torch.empty(shape, device="meta"))
    return _order(flat, order)


def _order(flat: torch.Tensor, order: str) -> torch.Tensor:
    key = -flat if order == "morf" else flat
    return key.sort(dim=1, stable=True).indices


def _count(fraction: float, d: int) -> int:
    """Number of the ``d`` pixels removed at ``fraction``: ``floor(fraction * d)`` (robust to float rounding)."""
    return min(d, math.floor(fraction * d + 1e-9))


def removal_mask(maps: torch.Tensor, fraction: float, order: str = "morf") -> torch.Tensor:
    """Boolean mask ``(N, H, W)``, True on the ``floor(fraction * H * W)`` pixels removed first by ``order``.

    ``maps``: ``(N, H, W)`` or ``(N, C, H, W)`` as in :func:`removal_order`; ``fraction`` in [0, 1].
    """
    _check_fraction(fraction, "fraction", upper_inclusive=True)
    idx = removal_order(maps, order)
    n, h, w = idx.shape[0], maps.shape[-2], maps.shape[-1]
    return _mask_from_order(idx, _count(fraction, h * w)).view(n, h, w)


def _mask_from_order(idx: torch.Tensor, k: int) -> torch.Tensor:
    mask = torch.zeros(idx.shape, dtype=torch.bool, device=idx.device)
    return mask.scatter_(1, idx[:, :k], True)


def _check_fraction(f: object, name: str, *, upper_inclusive: bool) -> float:
    number = isinstance(f, (int, float)) and not isinstance(f, bool)
    if not number or not (f >= 0.0 and (f <= 1.0 if upper_inclusive else f < 1.0)):
        interval = "[0, 1]" if upper_inclusive else "[0, 1)"
        raise ValueError(f"{name}: expected a number in {interval}, got {f!r}")
    return float(f)


def _check_fractions(fractions: Sequence[float], *, upper_inclusive: bool) -> tuple[float, ...]:
    if isinstance(fractions, (str, bytes)) or not isinstance(fractions, Sequence) or len(fractions) == 0:
        raise ValueError(f"fractions: expected a non-empty sequence of numbers, got {fractions!r}")
    out = tuple(_check_fraction(f, "fractions", upper_inclusive=upper_inclusive) for f in fractions)
    if any(b <= a for a, b in itertools.pairwise(out)):
        raise ValueError(f"fractions: expected strictly increasing values, got {list(out)}")
    return out


def _constant_fill(x: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``x`` with the masked pixels (``mask`` ``(N, H, W)``) taken from ``fill`` (broadcastable to ``x``)."""
    return torch.where(mask[:, None], fill.to(x.dtype).expand_as(x), x.detach())


# -------------------------------------------------------------------------------------------------- curves


def _check_inputs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, output: str) -> None:
    check_model_batch(model, x, y)
    check_choice(output, "output", OUTPUTS)
    warn_if_training(model)


def _score(model: nn.Module, x: torch.Tensor, y: torch.Tensor, output: str) -> torch.Tensor:
    """Per-example output ``(N,)``: 1.0/0.0 correctness of the arg-max (``accuracy``) or the probability of ``y``."""
    with torch.no_grad():
        logits = model_logits(model, x)  # an image the model was not built for: a ValueError naming both
        check_labels(y, x.shape[0], logits.shape[1])
        if output == "accuracy":
            return (logits.argmax(1) == y).to(x.dtype)
        return F.softmax(logits.double(), dim=1).gather(1, y[:, None]).squeeze(1).to(x.dtype)


def _curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    idx: torch.Tensor,
    fractions: tuple[float, ...],
    perturb: Callable[[torch.Tensor], torch.Tensor],
    output: str,
) -> torch.Tensor:
    """Outputs ``(N, F)`` on ``perturb(mask_f)`` for the first ``floor(f * D)`` pixels of ``idx`` per fraction."""
    n, _, h, w = x.shape
    cols = []
    for f in fractions:
        mask = _mask_from_order(idx, _count(f, h * w)).view(n, h, w)
        cols.append(_score(model, perturb(mask), y, output))
    return torch.stack(cols, dim=1)


def _trapezoid(values: torch.Tensor, fractions: tuple[float, ...]) -> torch.Tensor:
    """Mean height of the piecewise-linear curve ``values`` ``(N, F)`` over ``fractions`` (trapezoid rule)."""
    if len(fractions) == 1:
        return values[:, 0]
    f = torch.tensor(fractions, dtype=torch.float64, device=values.device)
    area = torch.trapezoid(values.double(), f, dim=1)
    return (area / (f[-1] - f[0])).to(values.dtype)


def road(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, *,
    order: str = "morf", fractions: Sequence[float] = ROAD_FRACTIONS, imputation: str = "noisy_linear",
    noise: float = 0.01, output: str = "accuracy", auc: str = "paper", value: float = 0.0,
    generator: torch.Generator | None = None,
) -> PerturbationCurve:
    """ROAD, Remove And Debias (Rong et al. 2022), as paper 003 (section 4.1, appendix I.3) uses it.

    For every fraction ``f`` the ``floor(f * H * W)`` pixels ranked first by ``maps`` (``order="morf"``: most
    relevant first; ``"lerf"``: least relevant first) are removed from the ORIGINAL image -- each fraction starts
    again from ``x``, as in Rong et al. -- and filled by :func:`noisy_linear_impute` (``imputation=
    "noisy_linear"``, noise std ``noise``) or set to ``value`` (``"constant"``, the biased variant ROAD corrects).
    The model's ``output`` is recorded: ``"accuracy"`` (1.0 where the arg-max class equals ``y``; Rong et al.'s
    curves) or ``"probability"`` (softmax probability of ``y``; paper 003's ``f``, the probability of the
    originally predicted class -- pass the model's predictions as ``y`` for that, or evaluate, as the paper does,
    only correctly classified images, where the two coincide).

    Area under the curve (``auc``), with ``f(x^(k))`` the output after the k-th of the ``L = len(fractions)``
    removal steps and ``x^(0) = x``:

    - ``"paper"`` (default, paper 003 section 4.1): ``ROAD_AUC = 1 / (L + 1) * sum_{k=1..L} (f(x^(0)) - f(x^(k)))``,
      the mean drop over the L + 1 points of the curve (the unperturbed point contributes a drop of 0);
    - ``"trapezoid"``: the trapezoid-rule area under the drop curve through ``(0, 0)`` and ``(f_k, f(x^(0)) -
      f(x^(k)))``, divided by the last fraction (so it is also a mean drop, in the output's units).

    With MoRF a larger area (a faster drop) means a more faithful map; with LeRF a smaller one. Paper 003 states
    ``k = 5`` removal steps without a unit; the default fractions are Rong et al.'s 10 %, 20 %, ..., 90 %.

    Args:
        model: classifier returning logits ``(N, K)`` (evaluated as is, without gradients; use eval mode).
        x: images, float ``(N, C, H, W)`` in [0, 1]; ``y``: int64 labels ``(N,)`` on ``x``'s device.
        maps: attributions ``(N, C', H, W)`` (``|a|`` summed over channels) or maps ``(N, H, W)``.
        fractions: strictly increasing values in [0, 1) (at least one pixel must stay known for the imputation).
        generator: optional ``torch.Generator`` for the imputation noise (one draw per fraction and image).

    Returns:
        :class:`PerturbationCurve` with ``curve`` ``(N, F)``, ``auc`` ``(N,)`` and ``original`` ``(N,)``, in
        ``x``'s dtype and on its device.
    """
    _check_inputs(model, x, y, output)
    check_choice(order, "order", ORDERS)
    check_choice(imputation, "imputation", IMPUTATIONS)
    check_choice(auc, "auc", AUC_RULES)
    check_positive(float(noise), "noise", allow_zero=True)
    fracs = _check_fractions(fractions, upper_inclusive=imputation == "constant")
    idx = _order(_as_maps(maps, x), order)
    if imputation == "noisy_linear":

        def perturb(mask: torch.Tensor) -> torch.Tensor:
            return noisy_linear_impute(x, mask, noise=noise, generator=generator)
    else:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"value: expected a finite number (the fill of imputation='constant'), got {value!r}")
        fill = torch.tensor(float(value), device=x.device)

        def perturb(mask: torch.Tensor) -> torch.Tensor:
            return _constant_fill(x, mask, fill)

    original = _score(model, x, y, output)
    curve = _curve(model, x, y, idx.to(x.device), fracs, perturb, output)
    drops = original[:, None] - curve
    if auc == "paper":
        area = drops.sum(1) / (len(fracs) + 1)
    else:
        zero = torch.zeros_like(original)[:, None]
        area = _trapezoid(torch.cat([zero, drops], 1), (0.0, *fracs)) if fracs[0] > 0 else _trapezoid(drops, fracs)
    return PerturbationCurve(curve=curve, auc=area, original=original)


def _baseline_image(x: torch.Tensor, baseline: float | str | torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """The baseline image ``(N, C, H, W)`` (or broadcastable tensor) of deletion / insertion."""
    if isinstance(baseline, str):
        check_choice(baseline, "baseline", ("blur",))
        check_int(kernel, "blur_kernel")
        if kernel % 2 == 0:
            raise ValueError(f"blur_kernel: expected an odd integer >= 1, got {kernel!r}")
        check_positive(float(sigma), "blur_sigma")
        with torch.no_grad():
            return KF.gaussian_blur2d(
                x.detach(), (kernel, kernel), (float(sigma), float(sigma)), border_type="replicate"
            )
    if isinstance(baseline, torch.Tensor):
        return check_broadcastable(baseline, x.shape, "baseline").detach().to(x.device, x.dtype)
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not math.isfinite(baseline):
        raise ValueError(f"baseline: expected a finite number, a tensor or 'blur', got {baseline!r}")
    return torch.tensor(float(baseline), device=x.device, dtype=x.dtype)


def deletion(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, *,
    order: str = "morf", fractions: Sequence[float] = CURVE_FRACTIONS, baseline: float | str | torch.Tensor = 0.0,
    output: str = "probability", blur_kernel: int = 11, blur_sigma: float = 5.0,
) -> PerturbationCurve:
    """Deletion curve (Petsiuk et al. 2018): replace the pixels ranked first by ``maps`` with a baseline.

    At fraction ``f`` the first ``floor(f * H * W)`` pixels of the ``order`` ranking (``"morf"`` by default) take
    the baseline's value in every channel: ``baseline`` is a number (default 0, a black pixel), a tensor
    broadcastable to ``x``, or ``"blur"`` (a Gaussian blur of ``x``, ``blur_kernel`` x ``blur_kernel``, std
    ``blur_sigma``, replicated borders). ``auc`` is the trapezoid-rule area under the ``output`` curve over
    ``fractions`` divided by their span (the curve's mean height); with MoRF a lower area means a more faithful
    map.

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, ``maps`` ``(N, C', H, W)`` or ``(N, H, W)``;
    ``fractions`` strictly increasing in [0, 1]. Returns a :class:`PerturbationCurve` (``curve`` ``(N, F)``,
    ``auc`` ``(N,)``, ``original`` ``(N,)``).
    """
    curve = _RiseCurve(False, order, fractions, baseline, output, (blur_kernel, blur_sigma))
    return _rise(model, x, y, maps, curve)


# The signature repeats deletion's on purpose: the two public curves state every keyword option with its own
# default (baseline 0 vs "blur"); their one implementation is ``_rise``.
def insertion(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, *,
    order: str = "morf", fractions: Sequence[float] = CURVE_FRACTIONS, baseline: float | str | torch.Tensor = "blur",
    output: str = "probability", blur_kernel: int = 11, blur_sigma: float = 5.0,
) -> PerturbationCurve:
    """Insertion curve (Petsiuk et al. 2018): insert the pixels ranked first by ``maps`` into a baseline image.

    At fraction ``f`` the first ``floor(f * H * W)`` pixels of the ``order`` ranking carry ``x``'s values and all
    others the baseline's: by default ``"blur"`` (Gaussian blur of ``x``, ``blur_kernel`` x ``blur_kernel``, std
    ``blur_sigma``, replicated borders), or a number / a tensor broadcastable to ``x``. ``auc`` is the
    trapezoid-rule area under the ``output`` curve over ``fractions`` divided by their span; with MoRF a higher
    area means a more faithful map.

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, ``maps`` ``(N, C', H, W)`` or ``(N, H, W)``;
    ``fractions`` strictly increasing in [0, 1]. Returns a :class:`PerturbationCurve` (``curve`` ``(N, F)``,
    ``auc`` ``(N,)``, ``original`` ``(N,)``).
    """
    curve = _RiseCurve(True, order, fractions, baseline, output, (blur_kernel, blur_sigma))
    return _rise(model, x, y, maps, curve)


@dataclass(frozen=True)
class _RiseCurve:
    """A deletion (``insert=False``) or insertion curve: the options of :func:`deletion` / :func:`insertion`,
    with the blur as ``(kernel, sigma)``."""

    insert: bool
    order: str
    fractions: Sequence[float]
    baseline: float | str | torch.Tensor
    output: str
    blur: tuple[int, float]


def _rise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, maps: torch.Tensor, c: _RiseCurve) -> PerturbationCurve:
    """Deletion fills the removed pixels of ``x`` from the baseline; insertion fills the inserted pixels of the
    baseline from ``x``."""
    _check_inputs(model, x, y, c.output)
    check_choice(c.order, "order", ORDERS)
    fracs = _check_fractions(c.fractions, upper_inclusive=True)
    idx = _order(_as_maps(maps, x), c.order).to(x.device)
    fill = _baseline_image(x, c.baseline, *c.blur)
    if c.insert:
        start = fill.expand_as(x)
        curve = _curve(model, x, y, idx, fracs, lambda mask: _constant_fill(start, mask, x), c.output)
    else:
        curve = _curve(model, x, y, idx, fracs, lambda mask: _constant_fill(x, mask, fill), c.output)
    return PerturbationCurve(curve=curve, auc=_trapezoid(curve, fracs), original=_score(model, x, y, c.output))


__all__ = [
    "CURVE_FRACTIONS",
    "NEIGHBOUR_WEIGHTS",
    "ROAD_FRACTIONS",
    "PerturbationCurve",
    "deletion",
    "insertion",
    "noisy_linear_impute",
    "removal_mask",
    "removal_order",
    "road",
]
