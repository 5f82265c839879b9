"""The one way to turn an attribution method's name (plus options) into a function.

:func:`explainer` is what attacks, metrics and the evaluation suite call instead of building their own
``functools.partial``: it looks a name up in the registry (or takes a callable as is), binds the options,
applies an ``ig_steps`` default to integrated gradients only and a ``generator`` to the random methods only, and
can give the version without the [0, 1] check or one that validates every result.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
from torch import nn

from ._grad import unchecked
from .gradients import integrated_gradients
from .interop import from_captum, is_captum
from .registry import Attribution, get_attribution


def explainer(
    method: str | Attribution,
    /,
    *,
    ig_steps: int | None = None,
    generator: torch.Generator | None = None,
    any_range: bool = False,
    checked: bool = False,
    **options: Any,
) -> Attribution:
    """The attribution ``method`` with ``options`` bound: ``fn(model, x, target, *, create_graph=False)``.

    Args:
        method: a registered name (``"saliency"``, ``"ig"``, ... ; ``ValueError`` listing the valid names
            otherwise), a Captum attribution object or class (:func:`.interop.from_captum`: measured, never
            attacked) or any callable ``fn(model, x, target, **options)``, used as given.
        ig_steps: the number of path points when ``method`` is integrated gradients and ``options`` does not set
            ``steps`` (how configs and attacks state the IG budget); ignored by every other method, e.g.
            ``explainer("ig", ig_steps=cfg.ig_steps)`` is ``integrated_gradients(..., steps=cfg.ig_steps)``
            and ``explainer("saliency", ig_steps=cfg.ig_steps)`` is ``saliency`` itself.
        generator: the random stream of a method that draws (SmoothGrad's noise, GradientSHAP's baselines and
            points: any method with a ``generator`` parameter); ignored by the deterministic methods. Without
            it a random method draws from torch's global random state, so a caller that must give the same
            numbers for the same seed (an evaluation) passes one.
        any_range: return the version without the [0, 1] check of ``x`` (same values on [0, 1]), for points
            outside the image range on purpose (``x + eps v`` of the bounds); only ``saliency``,
            ``input_x_gradient`` and ``integrated_gradients`` have one (``ValueError`` otherwise).
        checked: validate every result: a tensor ``(N, ...)`` with ``N = x.shape[0]`` and finite values
            (``ValueError`` otherwise), for user callables whose output is not guaranteed.
        options: keyword options of the method (``steps``, ``rule``, ``output``, ``layer``, ...).

    Returns:
        ``fn(model, x, target, *, create_graph=False)`` -> attribution (``x``'s shape for input attributions);
        ``x`` float ``(N, C, H, W)``, ``target`` int64 ``(N,)``. Without options, ``any_range`` or ``checked`` it is
        the registered function itself.
    """
    if isinstance(method, str):
        fn = get_attribution(method)
    elif is_captum(method):
        fn = from_captum(method)
    elif callable(method):
        fn = method
    else:
        raise ValueError(
            f"method: expected an attribution name, a Captum attribution or a callable fn(model, x, target), got "
            f"{method!r}"
        )
    if ig_steps is not None and fn is integrated_gradients:
        options.setdefault("steps", ig_steps)
    if generator is not None and _draws(fn):
        options["generator"] = generator
    if any_range:
        fn = unchecked(fn)
        if fn is None:
            raise ValueError(
                "any_range: expected 'saliency', 'input_x_gradient' or 'integrated_gradients' (the methods defined "
                f"outside [0, 1]), got {method!r}"
            )
    if options:
        fn = functools.partial(fn, **options)
    return _checked(fn) if checked else fn


def _draws(fn: Attribution) -> bool:
    """Whether ``fn`` takes a ``generator`` (a random method)."""
    try:
        return "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a callable without a signature
        return False


def _checked(fn: Attribution) -> Attribution:
    """``fn`` whose every result is validated: a tensor ``(N, ...)`` for ``N`` inputs, with finite values."""

    @functools.wraps(fn)
    def explain(model: nn.Module, x: torch.Tensor, target: Any, **kwargs: Any) -> torch.Tensor:
        e = fn(model, x, target, **kwargs)
        if not isinstance(e, torch.Tensor) or e.dim() < 2 or e.shape[0] != x.shape[0]:
            got = tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__
            raise ValueError(f"explain: expected attributions of shape ({x.shape[0]}, ...), got {got}")
        if not bool(torch.isfinite(e.detach()).all()):
            bad = int((~torch.isfinite(e.detach())).sum())
            raise ValueError(f"explain: expected finite attributions, got {bad} NaN/inf")
        return e

    return explain


__all__ = ["explainer"]
