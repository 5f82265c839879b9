"""``models.with_normalization``: a model trained on normalised inputs becomes a model of [0, 1] images."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import attrobust as ar
from attrobust.models import Normalize, with_normalization

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_wrapped_model_sees_the_normalised_image() -> None:
    torch.manual_seed(0)
    inner = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 5)).eval()
    model = with_normalization(inner, MEAN, STD)
    x = torch.rand(4, 3, 8, 8)
    expected = inner((x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1))
    assert torch.allclose(model(x), expected, atol=1e-6)
    assert isinstance(model.normalize, Normalize) and model.model is inner and not model.training
    assert set(model.state_dict()) >= {"normalize.mean", "normalize.std", "model.0.weight"}
    y = model(x).argmax(1)
    assert ar.saliency(model, x, y).shape == x.shape  # attributions in pixel units, on [0, 1] inputs


def test_bad_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="std"):
        with_normalization(nn.Identity(), MEAN, (0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="mean, std"):
        with_normalization(nn.Identity(), MEAN, (0.2, 0.2))
    with pytest.raises(ValueError, match="model"):
        with_normalization(lambda x: x, MEAN, STD)  # type: ignore[arg-type]
