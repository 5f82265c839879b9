"""Noise-averaged attributions: SmoothGrad (Smilkov et al. 2017) and GradientSHAP (Lundberg & Lee 2017).

Tensor contract: images ``x`` are float ``(N, C, H, W)`` in [0, 1]; ``target`` is int64 ``(N,)`` (or one int for
all examples); every function returns a tensor of the input's shape. With ``create_graph=True`` the result is
differentiable w.r.t. both the input and the parameters. Randomness comes only from ``generator`` (a
``torch.Generator`` on ``x``'s device; ``None`` uses the global RNG), so a seeded generator gives identical maps.
The ``n`` noisy samples are evaluated ``batch_samples`` at a time (``batch_samples * N`` images per pass).
Attributions never change ``model.training`` or any ``requires_grad`` flag; they run per example, with
normalisation and dropout layers in eval behaviour, and never write a buffer (see
:mod:`attrobust.attributions.gradients`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .._checks import check_finite, check_generator, check_images, check_int, check_positive
from ._grad import gradient, per_example, unchecked
from .gradients import as_target, input_x_gradient, saliency
from .registry import ATTRIBUTIONS, get_attribution

# Bases that run without their [0, 1] check when the noisy copies are not clamped (Captum's behaviour): their
# math is defined for any input; the other bases keep refusing unclamped copies.
_UNCLAMPED_BASES = (saliency, input_x_gradient)


def _chunks(n: int, batch_samples: int | None) -> range:
    step = n if batch_samples is None else check_int(batch_samples, "batch_samples")
    return range(0, n, step)


def _repeat_per_example(value: Any, x: torch.Tensor, copies: int) -> Any:
    """A per-example option (a tensor with ``x``'s number of dims and batch size ``N``) repeated for ``copies``
    noisy copies of the batch, ``(copies * N, ...)`` in the order of the stacked copies; anything else as given."""
    if isinstance(value, torch.Tensor) and value.dim() == x.dim() and value.shape[0] == x.shape[0]:
        return value.repeat(copies, *([1] * (value.dim() - 1)))
    return value


@ATTRIBUTIONS.register("smoothgrad")
@per_example
def smoothgrad(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *,
    base: str | Callable[..., torch.Tensor] = "saliency", n: int = 50, sigma: float = 0.15, clamp: bool = False,
    generator: torch.Generator | None = None, batch_samples: int | None = 10, create_graph: bool = False,
    **base_options: Any,
) -> torch.Tensor:
    """SmoothGrad (Smilkov et al. 2017): mean of ``base`` over ``n`` noisy copies, shape ``(N, C, H, W)``.

    ``SG(x) = 1/n sum_i base(x + eps_i)`` with ``eps_i ~ N(0, s^2)`` and ``s = sigma * (max(x_j) - min(x_j))``
    per example ``j`` (the paper's noise level as a fraction of the input range). ``base`` is a registered
    attribution name or any ``fn(model, x, target, *, create_graph, **options)``; ``base_options`` are passed on
    (e.g. ``steps`` for ``integrated_gradients``). The noise is drawn in one call,
    ``torch.randn((n, N, C, H, W), generator=generator)``, in that order.

    ``clamp=False`` (default, as in the paper and Captum's ``NoiseTunnel``) keeps the noisy copies unclamped; the
    ``saliency`` and ``input_x_gradient`` bases then run without their [0, 1] check, while other bases that
    validate their input raise ``ValueError`` unless ``clamp=True``, which clips every noisy copy to [0, 1].

    Per-example options, i.e. tensors of ``base_options`` shaped ``(N, ...)`` like ``x`` (an IG ``baseline``
    ``(N, C, H, W)``), follow their example: each batch of noisy copies gets them repeated once per copy, so
    copy ``i`` of example ``j`` uses row ``j``; other options (``(1, C, H, W)`` baselines, numbers) pass as given.
    """
    check_images(x)
    target = as_target(target, x)
    check_int(n, "n")
    check_generator(generator)
    check_positive(float(sigma), "sigma", allow_zero=True)
    fn = base if callable(base) else get_attribution(base)
    if not clamp and fn in _UNCLAMPED_BASES:
        fn = unchecked(fn)
    span = (x.detach().flatten(1).amax(1) - x.detach().flatten(1).amin(1)).view(-1, 1, 1, 1)
    noise = torch.randn((n, *x.shape), generator=generator, device=x.device, dtype=x.dtype) * (sigma * span)
    total = torch.zeros_like(x)
    for start in _chunks(n, batch_samples):
        eps = noise[start : start + batch_samples if batch_samples else n]
        c = eps.shape[0]
        noisy = (x.unsqueeze(0) + eps).reshape(c * x.shape[0], *x.shape[1:])
        if clamp:
            noisy = noisy.clamp(0.0, 1.0)
        if not create_graph:
            noisy = noisy.detach()
        options = {key: _repeat_per_example(value, x, c) for key, value in base_options.items()}
        a = fn(model, noisy, target.repeat(c), create_graph=create_graph, **options)
        total = total + a.view(c, *x.shape).sum(0)
    return total / n


@ATTRIBUTIONS.register("gradient_shap")
@per_example
def gradient_shap(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor | int, *,
    baselines: torch.Tensor | None = None, n: int = 50, stdev: float = 0.0, generator: torch.Generator | None = None,
    batch_samples: int | None = 10, create_graph: bool = False, output: str = "logit",
) -> torch.Tensor:
    """GradientSHAP (Lundberg & Lee 2017; Captum's ``GradientShap``), shape ``(N, C, H, W)``.

    The expected value, estimated with ``n`` samples per example, of ``(x~ - b) * grad f_target(b + alpha (x~ -
    b))`` with ``b`` drawn uniformly from ``baselines`` ``(B, C, H, W)``, ``alpha ~ U(0, 1)`` and
    ``x~ = x + N(0, stdev^2)`` (no input noise for ``stdev=0``, the default). ``baselines=None`` uses the
    distribution {black image} + 9 uniform-noise images ``U(0, 1)^(C, H, W)`` drawn from ``generator``. Draw
    order (for reproduction): [those 9 images], then ``index = randint(B, (n, N))``, ``alpha = rand(n, N)``,
    then (if ``stdev > 0``) ``randn(n, N, C, H, W)``. Its sum approximates ``f(x) - E_b f(b)`` (in expectation,
    for ``stdev=0``).
    """
    check_images(x)
    target = as_target(target, x)
    check_int(n, "n")
    check_generator(generator)
    check_positive(float(stdev), "stdev", allow_zero=True)
    kw = {"generator": generator, "device": x.device, "dtype": x.dtype}
    if baselines is None:
        baselines = torch.cat([x.new_zeros(1, *x.shape[1:]), torch.rand(9, *x.shape[1:], **kw)])
    elif not isinstance(baselines, torch.Tensor) or baselines.dim() != 4 or baselines.shape[1:] != x.shape[1:]:
        got = tuple(baselines.shape) if isinstance(baselines, torch.Tensor) else type(baselines).__name__
        raise ValueError(f"baselines: expected a tensor of shape (B, {', '.join(map(str, x.shape[1:]))}), got {got}")
    elif baselines.shape[0] == 0:
        raise ValueError("baselines: expected at least one baseline (B >= 1), got B = 0")
    else:
        check_finite(baselines.detach(), "baselines")
    index = torch.randint(baselines.shape[0], (n, x.shape[0]), generator=generator, device=x.device)
    alpha = torch.rand((n, x.shape[0]), **kw).view(n, -1, 1, 1, 1)
    noisy = x.unsqueeze(0).expand(n, *x.shape)
    if stdev > 0:
        noisy = noisy + stdev * torch.randn((n, *x.shape), **kw)
    delta = noisy - baselines[index]
    if not create_graph:
        delta = delta.detach()
    points = baselines[index] + alpha * delta
    total = torch.zeros_like(x)
    for start in _chunks(n, batch_samples):
        end = start + batch_samples if batch_samples else n
        c = points[start:end].shape[0]
        p = points[start:end].reshape(c * x.shape[0], *x.shape[1:])
        if not create_graph:
            p = p.detach()
        g = gradient(model, p, target.repeat(c), create_graph=create_graph, output=output).view(c, *x.shape)
        total = total + (delta[start:end] * g).sum(0)
    return total / n
