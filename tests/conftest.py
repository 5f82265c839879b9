"""Shared fixtures: tiny seeded models and image batches (CPU, seconds)."""

from __future__ import annotations

import pytest
import torch
from torch import nn


def make_tiny_cnn(in_channels: int = 1, num_classes: int = 10, size: int = 8, seed: int = 0) -> nn.Module:
    """A small random ReLU CNN on ``(N, in_channels, size, size)`` inputs, in eval mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(in_channels, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(6 * (size // 2) ** 2, 16),
        nn.ReLU(),
        nn.Linear(16, num_classes),
    )
    return model.eval()


@pytest.fixture
def tiny_cnn() -> nn.Module:
    return make_tiny_cnn()


@pytest.fixture
def tiny_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (5,), generator=g)
    return x, y


@pytest.fixture(autouse=True)
def _no_user_results_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write into a results database named by the user's environment."""
    monkeypatch.delenv("ATTROBUST_DB", raising=False)
