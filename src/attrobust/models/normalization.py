"""Wrap a model that expects normalised inputs so that it takes [0, 1] images, as every attrobust model does.

Most published classifiers (torchvision, timm, RobustBench) are trained on ``(x - mean) / std`` and normalise in
the data loader. attrobust keeps normalisation inside the model, so every attack, clamp and epsilon is in pixel
units; :func:`with_normalization` puts :class:`~attrobust.models.Normalize` in front of such a model.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .normalize import Normalize


def with_normalization(
    model: nn.Module, mean: Sequence[float] | torch.Tensor | float, std: Sequence[float] | torch.Tensor | float
) -> nn.Sequential:
    """``nn.Sequential(normalize=Normalize(mean, std), model=model)``: a model of [0, 1] images.

    Args:
        model: an ``nn.Module`` mapping normalised images ``(N, C, H, W)`` to logits ``(N, K)`` (not copied: the
            wrapper holds it, and its parameters are the wrapper's under the prefix ``model.``).
        mean, std: one value per channel (length C, e.g. ImageNet's ``(0.485, 0.456, 0.406)`` and
            ``(0.229, 0.224, 0.225)``), ``std > 0``; ``ValueError`` otherwise.

    Returns a module mapping float ``(N, C, H, W)`` images in [0, 1] to the logits ``(N, K)`` of
    ``model((x - mean) / std)``; its ``Normalize`` buffers follow ``.to(device)`` and live on the model's device.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    normalize = Normalize(mean, std)
    reference = next((t for t in (*model.parameters(), *model.buffers())), None)
    if reference is not None:
        normalize = normalize.to(reference.device)
    wrapped = nn.Sequential(OrderedDict([("normalize", normalize), ("model", model)]))
    wrapped.train(model.training)
    return wrapped


__all__ = ["with_normalization"]
