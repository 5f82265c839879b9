"""Per-example accuracy of logits against labels, clean or under input corruptions.

Tensor contract: images are float ``(N, C, H, W)`` in [0, 1]; models return logits ``(N, K)``; labels are int64
``(N,)``. Metrics return per-example tensors ``(N,)``; aggregation (mean, count) is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from attrobust._checks import check_images, check_labels, check_logits, model_logits, warn_if_training


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


def corruption_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    transforms: Mapping[str, Callable[[torch.Tensor], torch.Tensor]],
) -> dict[str, torch.Tensor]:
    """Per-example accuracy of ``model`` on each corrupted copy of ``x`` (ART paper, Table 3).

    Metrics do not know the corruptions themselves: the caller maps names to transforms, e.g.
    ``{name: functools.partial(attrobust.attacks.corruptions.corrupt, name=name, severity=3, generator=g)}``
    (the positional image argument first).

    Args:
        model: classifier returning logits ``(N, K)`` (eval mode).
        x: images ``(N, C, H, W)`` in [0, 1].
        y: int64 labels ``(N,)``.
        transforms: non-empty mapping from a name to a callable ``(N, C, H, W) -> (N, C, H, W)`` returning images
            in [0, 1]; applied in the mapping's order, each once, without autograd.

    Returns:
        dict with the same names (same order) -> float32 tensors ``(N,)`` of 0.0 / 1.0 (see :func:`accuracy`).
    """
    check_images(x)
    warn_if_training(model)
    if not isinstance(transforms, Mapping) or not transforms:
        raise ValueError(f"transforms: expected a non-empty mapping name -> callable, got {transforms!r}")
    for name, fn in transforms.items():
        if not isinstance(name, str) or not callable(fn):
            raise ValueError(f"transforms: expected str names mapped to callables, got {name!r}: {fn!r}")
    results: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, fn in transforms.items():
            xc = fn(x.detach())
            check_images(xc, f"transforms[{name!r}](x)")
            if xc.shape != x.shape:
                raise ValueError(f"transforms[{name!r}](x): expected shape {tuple(x.shape)}, got {tuple(xc.shape)}")
            results[name] = accuracy(model_logits(model, xc), y)
    return results
