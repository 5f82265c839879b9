"""The one projected-gradient loop shared by every attack.

``x`` is float ``(N, C, H, W)`` in [0, 1]; all budgets are in pixel units. Each step moves every example along
the sign of its gradient (l_inf) or its l2-normalised gradient (l2), projects back onto the eps ball around the
clean input and clamps to [0, 1]. The model is put in the requested mode for the attack and restored afterwards.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from .._checks import check_choice, check_generator, check_int, check_positive
from ..attributions import grad_of

NORMS = ("linf", "l2")
MODES = ("eval", "train", "keep")

LossFn = Callable[[torch.Tensor], torch.Tensor]
StepCallback = Callable[[int, torch.Tensor], None]


@contextmanager
def model_mode(model: nn.Module | None, mode: str = "eval") -> Iterator[None]:
    """Put ``model`` in ``mode`` (``"eval"``, ``"train"`` or ``"keep"``) and restore afterwards the exact previous
    ``training`` flag of every submodule (a model with some layers in eval mode, e.g. frozen batch norm, gets
    them back as they were)."""
    check_choice(mode, "mode", MODES)
    if model is None or mode == "keep":
        yield
        return
    flags = [(m, m.training) for m in model.modules()]
    model.train(mode == "train")
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _flat_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-example l2 norm of ``(N, ...)`` reshaped to broadcast: ``(N, 1, 1, 1)``."""
    return t.flatten(1).norm(dim=1).view(-1, *([1] * (t.dim() - 1)))


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str = "linf") -> torch.Tensor:
    """Project ``x_adv`` onto the ``norm`` ball of radius ``eps`` around ``x`` and clamp to [0, 1]."""
    delta = x_adv - x
    if norm == "linf":
        delta = delta.clamp(-eps, eps)
    else:
        delta = delta * torch.clamp(eps / (_flat_norm(delta) + 1e-12), max=1.0)
    return (x + delta).clamp(0.0, 1.0)


def random_point(
    x: torch.Tensor, eps: float, norm: str = "linf", generator: torch.Generator | None = None
) -> torch.Tensor:
    """A uniform random point of the eps ball around ``x`` (l_inf: per pixel; l2: uniform in the ball), in [0, 1].

    ``generator``: ``None`` (torch's global RNG) or a ``torch.Generator`` on ``x``'s device (``TypeError``
    otherwise)."""
    check_generator(generator)
    if norm == "linf":
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return (x + (2 * u - 1) * eps).clamp(0.0, 1.0)
    d = x[0].numel()
    direction = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    direction = direction / (_flat_norm(direction) + 1e-12)
    radius = torch.rand((x.shape[0],), generator=generator, dtype=x.dtype, device=x.device) ** (1.0 / d)
    return project(x + direction * eps * radius.view(-1, 1, 1, 1), x, eps, "l2")


def pgd_loop(
    loss_fn: LossFn,
    x: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    x_init: torch.Tensor | None = None,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Maximise ``loss_fn`` (per-example losses ``(N,)``) by projected gradient ascent from ``x_init`` (default x).

    Returns the last iterate ``(N, C, H, W)`` (detached). ``callback(t, x_t)`` is called after every step
    ``t = 1..steps`` with the projected iterate, e.g. to keep the best step by a criterion of the caller's.
    """
    check_choice(norm, "norm", NORMS)
    check_positive(eps, "eps", allow_zero=True)
    check_positive(step_size, "step_size", allow_zero=True)
    check_int(steps, "steps", 0)
    x = x.detach()
    x_adv = (x if x_init is None else x_init).detach().clone()
    for t in range(1, steps + 1):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            g = grad_of(loss_fn(x_adv).sum(), x_adv)
        if norm == "linf":
            x_adv = x_adv.detach() + step_size * g.sign()
        else:
            x_adv = x_adv.detach() + step_size * g / (_flat_norm(g) + 1e-10)
        x_adv = project(x_adv, x, eps, norm).detach()
        if callback is not None:
            callback(t, x_adv)
    return x_adv
