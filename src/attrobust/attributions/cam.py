"""Class activation maps of a convolutional layer: CAM, Grad-CAM and Grad-CAM++.

Tensor contract: images ``x`` are float ``(N, C, H, W)`` in [0, 1]; ``target`` is int64 ``(N,)`` (or one int for
all examples); ``layer`` (dotted name such as ``"layer4"`` / ``"features.3"``, or the module) outputs feature
maps ``A`` ``(N, K, h, w)``; ``layer=None`` picks the last leaf module with 4-D output other than adaptive
(global) pooling (found with one extra forward pass). The ``(N, h, w)`` map is upsampled bilinearly
(``align_corners=False``, as Captum's ``LayerAttribution.interpolate``) to ``(N, 1, H, W)`` and expanded to
``x``'s shape ``(N, C, H, W)`` (the same map in every channel), so ``metrics.saliency_map`` ranks pixels as the
map does (it sums ``|a|`` over channels, i.e. ``C * |map|``). With ``create_graph=True`` the result is
differentiable w.r.t. the input and the parameters. Attributions never change ``model.training`` or any
``requires_grad`` flag; they run per example, with normalisation and dropout layers in eval behaviour, and never
write a buffer (see :mod:`attrobust.attributions.gradients`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_images, check_labels, check_logits
from ._grad import grad_of, per_example, target_output
from .gradients import as_target
from .layer import last_feature_layer, layer_forward
from .registry import ATTRIBUTIONS


def _to_input(maps: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(N, h, w)`` -> bilinear ``(N, 1, H, W)`` -> expanded copy of shape ``x.shape``."""
    up = F.interpolate(maps.unsqueeze(1), size=x.shape[2:], mode="bilinear", align_corners=False)
    return up.expand_as(x).clone()


def _feature_maps(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None, create_graph: bool):
    check_images(x)
    if layer is None:
        layer = last_feature_layer(model, x)
    logits, acts = layer_forward(model, x, layer, create_graph=create_graph)
    if acts.dim() != 4:
        raise ValueError(f"layer: expected feature maps of shape (N, K, h, w), got {tuple(acts.shape)}")
    return logits, acts


@ATTRIBUTIONS.register("cam")
@per_example
def cam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *,
    layer: str | nn.Module | None = None, create_graph: bool = False,
) -> torch.Tensor:
    """CAM (Zhou et al. 2016) for nets ending in global-average-pool + ``nn.Linear``, shape ``(N, C, H, W)``.

    ``M = sum_k W[target, k] A_k`` with ``W`` the final Linear's weight and ``A`` the feature maps feeding the
    pool (no ReLU, no bias). ``ValueError`` when the model has no such head, i.e. when the logits are not
    ``mean_hw(A) @ W.T + b`` for the last ``nn.Linear``. For these nets ``grad_cam = ReLU(CAM) / (h w)`` on the
    feature grid.
    """
    target = as_target(target, x)
    logits, acts = _feature_maps(model, x, layer, create_graph)
    check_labels(target, x.shape[0], check_logits(logits, x.shape[0]).shape[1], name="target")
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears or linears[-1].in_features != acts.shape[1]:
        got = f"Linear({linears[-1].in_features}, ...)" if linears else "no nn.Linear"
        raise ValueError(f"cam: expected a final Linear({acts.shape[1]}, K) after global average pooling, got {got}")
    fc = linears[-1]
    with torch.no_grad():
        head = F.linear(acts.mean((2, 3)), fc.weight, fc.bias)
        if head.shape != logits.shape or not torch.allclose(head, logits, rtol=1e-4, atol=1e-4):
            raise ValueError(
                "cam: expected logits = Linear(global_average_pool(layer output)) (a GAP + linear head after the "
                "layer), but the model computes something else; use grad_cam"
            )
    weight = fc.weight if create_graph else fc.weight.detach()
    maps = torch.einsum("nk,nkhw->nhw", weight[target], acts if create_graph else acts.detach())
    return _to_input(maps, x)


@ATTRIBUTIONS.register("grad_cam")
@per_example
def grad_cam(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *,
    layer: str | nn.Module | None = None, plus_plus: bool = False, create_graph: bool = False, output: str = "logit",
) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017), shape ``(N, C, H, W)``: ``ReLU(sum_k mean_hw(dy/dA_k) A_k)``.

    ``y`` is the target logit (``output`` as in :func:`~attrobust.attributions.saliency`). ``plus_plus=True``
    gives :func:`grad_cam_pp`. Equal to Captum's ``LayerGradCam(relu_attributions=True)`` followed by
    ``LayerAttribution.interpolate(..., "bilinear")``.
    """
    target = as_target(target, x)
    logits, acts = _feature_maps(model, x, layer, create_graph)
    with torch.enable_grad():
        g = grad_of(target_output(logits, target, output).sum(), acts, create_graph=create_graph)
    a = acts if create_graph else acts.detach()
    if plus_plus:
        g2, g3 = g.pow(2), g.pow(3)
        denom = 2 * g2 + (a.sum((2, 3), keepdim=True) * g3)
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        weights = (alpha * F.relu(g)).sum((2, 3))
    else:
        weights = g.mean((2, 3))
    maps = F.relu(torch.einsum("nk,nkhw->nhw", weights, a))
    return _to_input(maps, x)


@ATTRIBUTIONS.register("grad_cam_pp")
@per_example
def grad_cam_pp(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *,
    layer: str | nn.Module | None = None, create_graph: bool = False, output: str = "logit",
) -> torch.Tensor:
    """Grad-CAM++ (Chattopadhyay et al. 2018), shape ``(N, C, H, W)``: ``ReLU(sum_k w_k A_k)``.

    With ``Y = exp(S)`` of the target logit ``S`` and ``g = dS/dA``, the paper's closed form (exact for
    piecewise-linear nets after the layer) gives ``alpha_kij = g^2 / (2 g^2 + sum_ab A_kab g^3)`` (0 where the
    denominator is 0) and ``w_k = sum_ij alpha_kij ReLU(dY/dA_kij)``. Here ``ReLU(g)`` replaces
    ``ReLU(dY/dA) = exp(S) ReLU(g)``: the dropped positive factor ``exp(S)`` only rescales each example's map
    (and would overflow for large logits).
    """
    return grad_cam(model, x, target, layer=layer, plus_plus=True, create_graph=create_graph, output=output)
