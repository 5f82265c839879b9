"""Captum attribution objects as attrobust attributions.

:func:`from_captum` turns a Captum attribution object (``captum.attr.IntegratedGradients(model)``,
``NoiseTunnel(Saliency(model))``, ``Occlusion(model)``, ...) or a Captum attribution class
(``captum.attr.IntegratedGradients``, built on the model of each call) into an attrobust attribution
``fn(model, x, target, *, create_graph=False, **options)``; :func:`attrobust.attributions.explainer` does this
for every Captum object it is given, so a Captum method can be used wherever attrobust *measures* an attribution:
the metrics that take an ``explain`` (RIS/ROS/RRS, ...), the evaluation suite's attribution and IFIA's judge
(``ifia(..., attribution=ig_object, dissimilarity="random")``).

What cannot be done with a Captum method: *attack* it. Captum computes its gradients without a double-backward
graph, so an attribution attack (IFIA's top-k and mass-centre objectives, targeted manipulation) and the training
objectives that differentiate an attribution (IG-NORM, ART, IGR, ...) cannot differentiate through it: asked for
``create_graph=True``, the adapter raises ``ValueError`` naming the attrobust method to use instead.

A Captum object is bound to the model it was built on: called on another model (a copy, the softplus surrogate)
it raises ``ValueError`` rather than explain the wrong network; a Captum *class* is built on each call's model.
The map is computed with the model's normalisation and dropout layers in eval behaviour, like every attrobust
attribution (``attrobust.models.eval_norm``), and returned detached, with ``x``'s device.

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1] (``attrobust.allow_any_range()`` relaxes the range),
``target`` int64 ``(N,)`` or an int; the result is what Captum returns for ``x``: the input's shape for input
attributions, the layer's for layer methods (``LayerGradCam``: upsample with ``LayerAttribution.interpolate``).
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from .._checks import check_images
from ._grad import per_example
from .gradients import as_target
from .registry import Attribution


def is_captum(method: object) -> bool:
    """True for a Captum attribution object (it has ``attribute()`` and the ``forward_func`` it explains) or a
    Captum attribution class (defined in a ``captum`` module, with an ``attribute`` method)."""
    if inspect.isclass(method):
        return method.__module__.split(".")[0] == "captum" and callable(getattr(method, "attribute", None))
    return callable(getattr(method, "attribute", None)) and hasattr(method, "forward_func")


def from_captum(method: Any, /, **attribute_options: Any) -> Attribution:
    """The Captum attribution ``method`` (an object or a class) as ``fn(model, x, target, *, create_graph=False,
    **options)``; ``attribute_options`` and ``options`` go to Captum's ``attribute`` (``n_steps``, ``baselines``,
    ``method``, ``nt_samples``, ...; the call's ``options`` win).

    Raises ``ValueError`` when ``method`` is not a Captum attribution, when the function is called with
    ``create_graph=True`` (Captum builds no double-backward graph: it cannot be attacked or trained through), and
    when an object built on one model is called on another.
    """
    if not is_captum(method):
        raise ValueError(
            f"method: expected a Captum attribution object (e.g. captum.attr.IntegratedGradients(model)) or class, "
            f"got {type(method).__name__}"
        )
    name = method.__name__ if inspect.isclass(method) else type(method).__name__

    @per_example
    def captum_attribution(
        model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *, create_graph: bool = False, **options: Any
    ) -> torch.Tensor:
        if create_graph:
            raise ValueError(
                f"create_graph: Captum's {name} builds no double-backward graph, so it cannot be attacked or trained "
                "through (IFIA's top-k or mass-centre objective, targeted manipulation, IG-NORM, ART, IGR, ...); "
                "expected an attrobust method there (e.g. 'ig', 'saliency'), got create_graph=True; a Captum method "
                "can be measured and judge an attack (IFIA with dissimilarity='random')"
            )
        check_images(x)
        target = as_target(target, x)
        obj = method(model) if inspect.isclass(method) else _bound_to(method, model, name)
        with torch.enable_grad():
            out = obj.attribute(x.detach().requires_grad_(True), target=target, **{**attribute_options, **options})
        out = out[0] if isinstance(out, tuple) else out
        return out.detach().to(x.device)

    captum_attribution.__name__ = captum_attribution.__qualname__ = f"captum_{name}"
    return captum_attribution


def _bound_to(obj: Any, model: nn.Module, name: str) -> Any:
    """``obj`` when its ``forward_func`` is ``model`` (or ``model.forward``), else ``ValueError``."""
    forward = obj.forward_func
    if forward is model or getattr(forward, "__self__", None) is model:
        return obj
    raise ValueError(
        f"model: Captum's {name} object was built on {type(forward).__name__} {id(forward):#x} but is asked to "
        f"explain {type(model).__name__} {id(model):#x}; expected the same model (build the object on it, or pass "
        f"the class captum.attr.{name} to have it built on each model)"
    )


__all__ = ["from_captum", "is_captum"]
