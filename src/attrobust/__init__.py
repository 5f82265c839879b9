"""attrobust: attributional robustness of image classifiers.

Tensor contract (every public function): images are float ``(N, C, H, W)`` in [0, 1] (normalisation is the
model's first layer, so budgets are in pixel units), labels int64 ``(N,)``, models return logits ``(N, K)``,
attributions have the input's shape and metrics return per-example tensors ``(N,)``.

Layers, each importing only from those before it: ``data -> models -> attributions -> attacks -> objectives ->
metrics -> experiments``. The names below are the curated public API; the subpackages hold the rest.
"""

from __future__ import annotations

from . import attacks, attributions, data, metrics, models, objectives
from ._checks import allow_any_range
from .attacks import IFIAResult, fgsm, ifia, pgd
from .attributions import input_x_gradient, integrated_gradients, saliency
from .data import ImageDataset
from .metrics import accuracy, gini, kendall_tau, saliency_map, ssim, topk_intersection
from .models import insert_smoothing, softplus
from .objectives import create as objective

__version__ = "0.1.0"

__all__ = [
    "IFIAResult",
    "ImageDataset",
    "__version__",
    "accuracy",
    "allow_any_range",
    "attacks",
    "attributions",
    "data",
    "fgsm",
    "gini",
    "ifia",
    "input_x_gradient",
    "insert_smoothing",
    "integrated_gradients",
    "kendall_tau",
    "metrics",
    "models",
    "objective",
    "objectives",
    "pgd",
    "saliency",
    "saliency_map",
    "softplus",
    "ssim",
    "topk_intersection",
]
