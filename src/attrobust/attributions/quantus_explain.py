"""An attrobust attribution as Quantus' ``explain_func``.

Quantus calls ``explain_func(model=model, inputs=x_batch, targets=y_batch, **explain_func_kwargs)`` with numpy
arrays (images ``(N, C, H, W)``, channel first; targets ``(N,)`` or one int) and expects a numpy array of
attributions back. :func:`quantus_explain_func` adapts any method :func:`~attrobust.attributions.explainer`
resolves (a registered name with its options, a Captum object, a callable): arrays become float32/int64 tensors on
the model's device, the attribution runs, and the result comes back as a float32 numpy array of the input's shape.

Quantus perturbs inputs beyond the image range (MaxSensitivity adds uniform noise), which attrobust refuses by
default (every budget is in [0, 1] pixel units): ``any_range=True`` runs each call inside
:func:`attrobust.allow_any_range`, or wrap the whole Quantus call in ``with attrobust.allow_any_range():``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from .._checks import allow_any_range, check_nchw
from .explainer import explainer

# keywords Quantus adds to explain_func_kwargs on its own; the model's device decides where the work runs
QUANTUS_KEYS = ("device", "channel_first")


def quantus_explain_func(
    method: Any = "ig", /, *, any_range: bool = False, **options: Any
) -> Callable[..., np.ndarray]:
    """``explain_func(model, inputs, targets, **kwargs) -> np.ndarray`` for Quantus metrics.

    Args:
        method: what :func:`~attrobust.attributions.explainer` resolves (``"ig"``, ``"saliency"``, a Captum object,
            a callable ``fn(model, x, target)``); ``ValueError`` for an unknown name, at once.
        any_range: run every call inside :func:`attrobust.allow_any_range` (inputs outside [0, 1] allowed).
        options: the method's options (``steps``, ``rule``, ``output``, ...).

    The returned function takes ``model`` (an ``nn.Module``, or Quantus' wrapper with ``get_model()``),
    ``inputs`` float ``(N, C, H, W)`` (numpy or torch), ``targets`` int ``(N,)`` or one int, and keyword options
    for the method (Quantus' own ``device`` and ``channel_first`` are ignored); it returns float32 ``(N, C, H, W)``.
    """
    fn = explainer(method, **options)

    def explain_func(model: Any, inputs: Any, targets: Any, **kwargs: Any) -> np.ndarray:
        net = model if isinstance(model, nn.Module) else model.get_model() if hasattr(model, "get_model") else model
        if not isinstance(net, nn.Module):
            raise ValueError(f"model: expected a torch.nn.Module (or a wrapper with get_model()), got {type(net)}")
        device = next((p.device for p in net.parameters()), torch.device("cpu"))
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32), device=device)
        check_nchw(x, "inputs")
        y = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=device).reshape(-1)
        if y.numel() == 1 and x.shape[0] > 1:
            y = y.expand(x.shape[0]).contiguous()
        for key in QUANTUS_KEYS:
            kwargs.pop(key, None)
        with allow_any_range() if any_range else contextlib.nullcontext():
            a = fn(net, x, y, **kwargs)
        return a.detach().float().cpu().numpy()

    return explain_func


__all__ = ["quantus_explain_func"]
