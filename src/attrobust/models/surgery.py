"""Module-tree surgery that keeps the original parameters.

ReLU networks have zero second derivatives almost everywhere, so methods that differentiate an attribution
(IFIA, IG-NORM, ART, IGR) use a copy of the model whose ReLUs are replaced by ``Softplus(beta)``; as ``beta``
grows the copy converges to the ReLU model.
"""

from __future__ import annotations

import copy

from torch import nn

from attrobust._checks import check_positive


def _shallow(module: nn.Module) -> nn.Module:
    """Copy ``module`` with fresh bookkeeping containers but the same parameter and buffer tensors."""
    new = copy.copy(module)
    for key, value in vars(module).items():
        if key == "spec":
            new.__dict__[key] = copy.deepcopy(value)
        elif isinstance(value, (dict, set)):
            new.__dict__[key] = copy.copy(value)
    return new


def _swap(module: nn.Module, beta: float) -> nn.Module:
    if isinstance(module, nn.ReLU):
        smooth = nn.Softplus(beta=beta)
        smooth.train(module.training)
        return smooth
    new = _shallow(module)
    new._modules = {name: None if child is None else _swap(child, beta) for name, child in module._modules.items()}
    return new


def softplus(model: nn.Module, beta: float) -> nn.Module:
    """Return a copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta=beta)``.

    The copy is a new module tree that *shares* every parameter and buffer (the same tensor objects) with
    ``model``: training or loading weights into the original is seen by the copy, and batch-norm running
    statistics are shared. Module containers (children, hooks, ``spec``) are the copy's own, so editing the copy's
    structure leaves ``model`` untouched. ``model`` itself is not modified.

    The train/eval mode of every module is copied at call time; afterwards the two modes are independent
    (``model.eval()`` does not switch the copy; call ``copy.eval()`` too).

    Only ``nn.ReLU`` modules are swapped (a functional ``F.relu`` inside a ``forward`` cannot be); a model
    without them is returned as a parameter-sharing copy unchanged in behaviour.

    Tensor contract: the copy maps float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)`` like ``model``.

    Args:
        model: the network (typically built by :func:`attrobust.models.create`).
        beta: softplus sharpness, finite and > 0; ``softplus(beta*x)/beta -> relu(x)`` as ``beta -> inf``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise ValueError(f"beta: expected a finite float > 0, got {beta!r}")
    check_positive(float(beta), "beta")
    return _swap(model, float(beta))
