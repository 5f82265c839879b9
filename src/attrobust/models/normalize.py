"""Per-channel normalisation as the first layer of every model.

Keeping normalisation inside the model means every attack, clamp and epsilon works in pixel units: images
enter the model as float ``(N, C, H, W)`` in [0, 1] and ``Normalize`` maps them to ``(x - mean) / std``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn


def _as_floats(values: Sequence[float] | torch.Tensor | float, name: str) -> tuple[float, ...]:
    if isinstance(values, torch.Tensor):
        if values.dim() > 1:
            raise ValueError(f"{name}: expected a 1-D sequence of per-channel values, got shape {tuple(values.shape)}")
        values = values.reshape(-1).tolist()
    elif isinstance(values, (int, float)):
        values = [values]
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected a sequence of numbers, got {values!r}") from None
    if not out:
        raise ValueError(f"{name}: expected at least one value (one per channel), got an empty sequence")
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name}: expected finite values, got {out}")
    return out


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel.

    Args:
        mean: one value per channel (length C).
        std: one strictly positive value per channel (length C).

    Input: float ``(N, C, H, W)`` images in [0, 1] pixel space. Output: the normalised tensor of the same shape.
    ``mean`` and ``std`` are stored as buffers of shape ``(1, C, 1, 1)``; they follow ``.to(device)`` and are
    part of the ``state_dict``.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        m = _as_floats(mean, "mean")
        s = _as_floats(std, "std")
        if len(m) != len(s):
            raise ValueError(f"mean, std: expected the same length (one per channel), got {len(m)} and {len(s)}")
        if min(s) <= 0:
            raise ValueError(f"std: expected values > 0, got {s}")
        self.register_buffer("mean", torch.tensor(m, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(s, dtype=torch.float32).view(1, -1, 1, 1))

    @property
    def num_channels(self) -> int:
        """Number of channels C this layer expects."""
        return self.mean.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` of shape ``(N, C, H, W)``; returns a tensor of the same shape."""
        if x.dim() != 4 or x.shape[1] != self.num_channels:
            raise ValueError(f"Normalize: expected input of shape (N, {self.num_channels}, H, W), got {tuple(x.shape)}")
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        mean = ", ".join(f"{v:.4g}" for v in self.mean.flatten().tolist())
        std = ", ".join(f"{v:.4g}" for v in self.std.flatten().tolist())
        return f"mean=({mean}), std=({std})"
