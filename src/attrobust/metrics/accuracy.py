"""Per-example accuracy of logits against labels.

Tensor contract: models return logits ``(N, K)``; labels are int64 ``(N,)``. Metrics return per-example tensors
``(N,)``; aggregation (mean, count) is the caller's.
"""

from __future__ import annotations

import torch

from attrobust._checks import check_labels, check_logits


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """1.0 where the arg-max class of ``logits`` equals the label, else 0.0.

    Args:
        logits: float tensor ``(N, K)`` (model outputs, finite).
        y: int64 labels ``(N,)`` with values in ``[0, K)``.

    Returns:
        float32 tensor ``(N,)`` of 0.0 / 1.0 on the logits' device. Ties in the logits go to the lowest class
        index (``torch.argmax``).
    """
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits: expected a torch.Tensor of shape (N, K), got {type(logits).__name__}")
    n = logits.shape[0] if logits.dim() > 0 else 0
    check_logits(logits, n)
    if n == 0 or logits.shape[1] == 0:
        raise ValueError(f"logits: expected a non-empty batch (N >= 1, K >= 1), got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits: expected a floating-point tensor, got dtype {logits.dtype}")
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise ValueError(f"logits: expected finite values, got {bad} NaN/inf entries")
    check_labels(y, n, logits.shape[1])
    if y.device != logits.device:
        raise ValueError(f"logits, y: expected tensors on the same device, got {logits.device} and {y.device}")
    return (logits.argmax(1) == y).float()
