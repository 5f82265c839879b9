"""Differentiable attribution methods, registered by name.

Every method (saliency, input x gradient, IG, SmoothGrad, GradientSHAP, CAM, Grad-CAM, Grad-CAM++, layer IG) has
the signature ``fn(model, x, target, *, create_graph=False, **options) -> Tensor`` with ``x``
float ``(N, C, H, W)`` in [0, 1], ``target`` int64 ``(N,)`` and a result of ``x``'s shape.

The house (each module imports only those above it in this list, plus ``attrobust._checks``, ``_registry`` and
``attrobust.models``):

- ``registry.py``: ``ATTRIBUTIONS`` (name -> function) and :func:`get_attribution`; every method module below
  registers its public functions there.
- ``_grad.py``: the one call of ``torch.autograd.grad`` (:func:`gradient`, :func:`grad_of`, :func:`target_output`)
  and the wrappers of every public method (``per_example``: eval-mode normalisation; ``range_checked``: inputs in
  [0, 1], with the unchecked version kept for callers that need points outside).
- ``gradients.py``: saliency, input x gradient, integrated gradients (quadrature rules, affine prefix).
- ``layer.py``: layer addressing and hooks, layer integrated gradients; ``cam.py``: CAM, Grad-CAM, Grad-CAM++;
  ``noise.py``: SmoothGrad and GradientSHAP.
- ``interop.py``: :func:`from_captum`, a Captum attribution object or class as an attrobust attribution (measured,
  never attacked: Captum builds no double-backward graph).
- ``explainer.py``: :func:`explainer`, the one resolver from a method name (plus options, or a Captum object) to a
  function ``fn(model, x, target, *, create_graph=False)``, used by attacks, metrics and the evaluation suite.
- ``quantus_explain.py``: :func:`quantus_explain_func`, an attribution as Quantus' ``explain_func`` (numpy in and
  out).
"""

from __future__ import annotations

from ._grad import TARGET_KINDS, grad_of, gradient, target_output
from .cam import cam, grad_cam, grad_cam_pp
from .explainer import explainer
from .gradients import IG_RULES, as_target, ig_alphas, input_x_gradient, integrated_gradients, saliency
from .interop import from_captum, is_captum
from .layer import layer_integrated_gradients
from .noise import gradient_shap, smoothgrad
from .quantus_explain import quantus_explain_func
from .registry import ATTRIBUTIONS, Attribution, get_attribution

__all__ = [
    "ATTRIBUTIONS",
    "IG_RULES",
    "TARGET_KINDS",
    "Attribution",
    "as_target",
    "cam",
    "explainer",
    "from_captum",
    "get_attribution",
    "grad_cam",
    "grad_cam_pp",
    "grad_of",
    "gradient",
    "gradient_shap",
    "ig_alphas",
    "input_x_gradient",
    "integrated_gradients",
    "is_captum",
    "layer_integrated_gradients",
    "quantus_explain_func",
    "saliency",
    "smoothgrad",
    "target_output",
]
