"""Differentiable attribution methods, registered by name.

Every method (saliency, input x gradient, IG, SmoothGrad, GradientSHAP, CAM, Grad-CAM, Grad-CAM++, layer IG) has
the signature ``fn(model, x, target, *, create_graph=False, **options) -> Tensor`` with ``x``
float ``(N, C, H, W)`` in [0, 1], ``target`` int64 ``(N,)`` and a result of ``x``'s shape.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._registry import Registry
from ._grad import TARGET_KINDS, grad_of, gradient, target_output
from .cam import cam, grad_cam, grad_cam_pp
from .gradients import IG_RULES, as_target, ig_alphas, input_x_gradient, integrated_gradients, saliency
from .layer import layer_integrated_gradients
from .noise import gradient_shap, smoothgrad

Attribution = Callable[..., torch.Tensor]

ATTRIBUTIONS: Registry[Attribution] = Registry("attribution")
ATTRIBUTIONS.register("saliency")(saliency)
ATTRIBUTIONS.register("input_x_gradient")(input_x_gradient)
ATTRIBUTIONS.register("integrated_gradients")(integrated_gradients)
ATTRIBUTIONS.register("ig")(integrated_gradients)
ATTRIBUTIONS.register("smoothgrad")(smoothgrad)
ATTRIBUTIONS.register("gradient_shap")(gradient_shap)
ATTRIBUTIONS.register("cam")(cam)
ATTRIBUTIONS.register("grad_cam")(grad_cam)
ATTRIBUTIONS.register("grad_cam_pp")(grad_cam_pp)
ATTRIBUTIONS.register("layer_integrated_gradients")(layer_integrated_gradients)


def get_attribution(name: str) -> Attribution:
    """The attribution function registered as ``name`` (``ValueError`` listing the valid names otherwise)."""
    return ATTRIBUTIONS.get(name)


__all__ = [
    "ATTRIBUTIONS",
    "IG_RULES",
    "TARGET_KINDS",
    "as_target",
    "cam",
    "get_attribution",
    "grad_cam",
    "grad_cam_pp",
    "grad_of",
    "gradient",
    "gradient_shap",
    "ig_alphas",
    "input_x_gradient",
    "integrated_gradients",
    "layer_integrated_gradients",
    "saliency",
    "smoothgrad",
    "target_output",
]
