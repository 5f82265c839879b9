"""Differentiable attribution methods, registered by name.

Every method has the signature ``fn(model, x, target, *, create_graph=False, **options) -> Tensor`` with ``x``
float ``(N, C, H, W)`` in [0, 1], ``target`` int64 ``(N,)`` and a result of ``x``'s shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._registry import Registry
from ._grad import gradient, target_output
from .gradients import IG_RULES, as_target, ig_alphas, input_x_gradient, integrated_gradients, saliency

Attribution = Callable[..., torch.Tensor]

ATTRIBUTIONS: Registry[Attribution] = Registry("attribution")
ATTRIBUTIONS.register("saliency")(saliency)
ATTRIBUTIONS.register("input_x_gradient")(input_x_gradient)
ATTRIBUTIONS.register("integrated_gradients")(integrated_gradients)
ATTRIBUTIONS.register("ig")(integrated_gradients)


def get_attribution(name: str) -> Attribution:
    """The attribution function registered as ``name`` (``ValueError`` listing the valid names otherwise)."""
    return ATTRIBUTIONS.get(name)


__all__ = [
    "ATTRIBUTIONS",
    "IG_RULES",
    "as_target",
    "get_attribution",
    "gradient",
    "ig_alphas",
    "input_x_gradient",
    "integrated_gradients",
    "saliency",
    "target_output",
]
