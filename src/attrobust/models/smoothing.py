"""Feature-map smoothing blocks (paper 003, "Towards improving saliency map interpretability using feature map
smoothing": section 3.3, Figure 2, appendix B; appendix G for the convolution-only ablations).

A block maps a feature map ``x`` of shape ``(N, C, H, W)`` to a map of the same shape::

    y = x + W * s(x)

where ``s`` is the smoothing operation of the block's ``kind`` and ``W`` a learned 1x1 convolution (C -> C, with
bias); the residual sum keeps the original features (Figure 2: smoothing, then 1x1 convolution, then residual
connection, as in the feature-denoising blocks of Xie et al. 2019). No non-linearity is used inside a block.

Kinds (:data:`SMOOTHING_KINDS`, each a factory ``factory(channels, kernel, **options) -> nn.Module`` for ``s``):

- ``mean``: K x K box filter, Eq. 9 (kornia ``box_blur``).
- ``median``: K x K median filter, Eq. 10 (kornia ``median_blur``; its gradient flows to the selected value).
- ``gaussian``: K x K Gaussian filter, Eqs. 11-12 (kornia ``gaussian_blur2d``). By default sigma follows
  appendix B: per axis ``0.3 * ((size - 1) * 0.5 - 1) + 0.8`` with ``size`` the feature map's width (sigma_x) and
  height (sigma_y), computed at every call; ``sigma=<float>`` or ``(sigma_y, sigma_x)`` fixes it.
- ``nonlocal_gaussian``: Eqs. 13-14, ``m_i = sum_j exp(x_i . x_j) x_j / sum_j exp(x_i . x_j)`` over all H*W
  positions (a softmax over positions j of the raw dot products; no parameters, no scaling).
- ``embedded_gaussian``: Eqs. 13 and 15, the same with the affinity ``exp(theta(x_i) . phi(x_j))``, ``theta`` and
  ``phi`` learned 1x1 convolutions to ``embed_channels`` channels (default ``max(1, C // 2)`` as in Wang et al.
  2018); the averaged values are the features ``x_j`` themselves, as Eq. 13 writes.
- ``identity`` and ``random`` (appendix G, receptive-field ablation): the smoothing operation is replaced by a
  learned depthwise K x K convolution (no bias, zero padding), initialised to the identity kernel (so at
  initialisation the block is exactly ``x + W x``: no filtering) or to a random kernel drawn from
  ``torch.Generator().manual_seed(seed)`` (uniform in ``[-1/K, 1/K]``, PyTorch's default bound, independent of
  the global RNG).

Local filters pad the map explicitly (``border_type``, default ``reflect`` as kornia) and crop kornia's output
back to ``H x W``, so the result does not depend on kornia's own border handling; where a side is too short to
reflect (``H`` or ``W`` <= K // 2, e.g. a 1x1 map) ``replicate`` padding is used instead.

Tensor contract: input and output are float ``(N, C, H, W)`` feature maps (not images; any real values).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import kornia.filters as KF
import torch
import torch.nn.functional as F
from torch import nn

from attrobust._checks import check_choice, check_int, check_positive
from attrobust._registry import Registry

FilterFactory = Callable[..., nn.Module]

SMOOTHING_KINDS: Registry[FilterFactory] = Registry("smoothing kind")

BORDER_TYPES = ("reflect", "replicate", "constant", "circular")


def paper_sigma(height: int, width: int) -> tuple[float, float]:
    """Gaussian sigma of appendix B for an ``H x W`` feature map, as kornia's ``(sigma_y, sigma_x)``."""
    return 0.3 * ((height - 1) * 0.5 - 1) + 0.8, 0.3 * ((width - 1) * 0.5 - 1) + 0.8


def _check_kernel(kernel: object) -> int:
    check_int(kernel, "kernel", 1)
    if kernel % 2 == 0:  # type: ignore[operator]
        raise ValueError(f"kernel: expected an odd integer >= 1 (the output keeps the input's size), got {kernel!r}")
    return int(kernel)  # type: ignore[arg-type]


def _check_sigma(sigma: object) -> tuple[float, float] | None:
    if sigma is None:
        return None
    values = list(sigma) if isinstance(sigma, (list, tuple)) else [sigma]
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise ValueError(f"sigma: expected None, a number > 0 or a pair (sigma_y, sigma_x) of numbers, got {sigma!r}")
    for v in values:
        check_positive(float(v), "sigma")
    return float(values[0]), float(values[1])


class LocalFilter(nn.Module):
    """Channel-wise K x K mean / median / Gaussian filter (appendix B.1, Eqs. 9-12) through kornia.

    ``(N, C, H, W) -> (N, C, H, W)``; no parameters.
    """

    def __init__(self, kind: str, kernel: int, *, border_type: str = "reflect",
                 sigma: tuple[float, float] | None = None) -> None:  # fmt: skip
        super().__init__()
        self.kind = check_choice(kind, "kind", ("mean", "median", "gaussian"))
        self.kernel = _check_kernel(kernel)
        self.border_type = check_choice(border_type, "border_type", BORDER_TYPES)
        self.sigma = _check_sigma(sigma)

    def padding_mode(self, height: int, width: int) -> str:
        """The ``F.pad`` mode used on an ``H x W`` map; ``ValueError`` when the map cannot be padded."""
        r = self.kernel // 2
        if self.border_type == "reflect" and min(height, width) <= r:
            return "replicate"
        if self.border_type == "circular" and min(height, width) < r:
            raise ValueError(
                f"{self.kind} filter: expected a feature map of at least {r}x{r} for circular padding with kernel "
                f"{self.kernel}, got {height}x{width}"
            )
        return self.border_type

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        r = self.kernel // 2
        padded = F.pad(x, (r, r, r, r), mode=self.padding_mode(h, w)) if r else x
        k = (self.kernel, self.kernel)
        if self.kind == "mean":
            out = KF.box_blur(padded, k)
        elif self.kind == "median":
            out = KF.median_blur(padded, k)
        else:
            out = KF.gaussian_blur2d(padded, k, self.sigma or paper_sigma(h, w))
        return out[..., r : r + h, r : r + w]

    def extra_repr(self) -> str:
        sigma = f", sigma={self.sigma}" if self.kind == "gaussian" else ""
        return f"{self.kind}, kernel={self.kernel}, border_type={self.border_type!r}{sigma}"


class NonLocalFilter(nn.Module):
    """Non-local mean over all positions (appendix B.2, Eq. 13), batched as one attention matrix per image.

    ``m_i = sum_j softmax_j(a_ij) x_j`` with ``a_ij = x_i . x_j`` (non-local Gaussian, Eq. 14) or
    ``a_ij = theta(x_i) . phi(x_j)`` with 1x1-convolution embeddings (embedded Gaussian, Eq. 15) when
    ``embed_channels`` is given. The softmax is exactly ``exp(a_ij) / C(x)`` with ``C(x) = sum_j exp(a_ij)``.
    ``(N, C, H, W) -> (N, C, H, W)``; memory ``O(N (H W)^2)``.
    """

    def __init__(self, channels: int, embed_channels: int | None = None) -> None:
        super().__init__()
        check_int(channels, "channels", 1)
        self.theta: nn.Module | None = None
        self.phi: nn.Module | None = None
        if embed_channels is not None:
            check_int(embed_channels, "embed_channels", 1)
            self.theta = nn.Conv2d(channels, embed_channels, 1)
            self.phi = nn.Conv2d(channels, embed_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        values = x.reshape(n, c, h * w)
        if self.theta is None or self.phi is None:
            query = key = values
        else:
            query, key = self.theta(x).flatten(2), self.phi(x).flatten(2)
        weights = torch.softmax(query.transpose(1, 2) @ key, dim=-1)  # (N, L, L), row i sums to 1 over j
        return (values @ weights.transpose(1, 2)).reshape(n, c, h, w)


class ConvFilter(nn.Module):
    """Learned depthwise K x K convolution replacing the smoothing operation (appendix G ablation).

    ``init="identity"``: the centre tap is 1 and every other tap 0 (no filtering at initialisation);
    ``init="random"``: taps uniform in ``[-1/K, 1/K]`` from a generator seeded with ``seed``.
    ``(N, C, H, W) -> (N, C, H, W)``.
    """

    def __init__(self, channels: int, kernel: int, init: str, seed: int = 0) -> None:
        super().__init__()
        check_int(channels, "channels", 1)
        kernel = _check_kernel(kernel)
        check_choice(init, "init", ("identity", "random"))
        check_int(seed, "seed", 0)
        self.conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=channels, bias=False)
        with torch.no_grad():
            if init == "identity":
                weight = torch.zeros(channels, 1, kernel, kernel)
                weight[:, :, kernel // 2, kernel // 2] = 1.0
            else:
                gen = torch.Generator().manual_seed(seed)
                bound = 1.0 / math.sqrt(kernel * kernel)
                weight = (torch.rand(channels, 1, kernel, kernel, generator=gen) * 2 - 1) * bound
            self.conv.weight.copy_(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


@SMOOTHING_KINDS.register("mean")
def _mean(channels: int, kernel: int, *, border_type: str = "reflect") -> nn.Module:
    """Box filter (Eq. 9)."""
    return LocalFilter("mean", kernel, border_type=border_type)


@SMOOTHING_KINDS.register("median")
def _median(channels: int, kernel: int, *, border_type: str = "reflect") -> nn.Module:
    """Median filter (Eq. 10)."""
    return LocalFilter("median", kernel, border_type=border_type)


@SMOOTHING_KINDS.register("gaussian")
def _gaussian(channels: int, kernel: int, *, sigma: float | tuple[float, float] | None = None,
             border_type: str = "reflect") -> nn.Module:  # fmt: skip
    """Gaussian filter (Eqs. 11-12); ``sigma=None`` is appendix B's size-dependent rule."""
    return LocalFilter("gaussian", kernel, border_type=border_type, sigma=_check_sigma(sigma))


@SMOOTHING_KINDS.register("nonlocal_gaussian")
def _nonlocal_gaussian(channels: int, kernel: int) -> nn.Module:
    """Non-local Gaussian (Eqs. 13-14); ``kernel`` is not used."""
    return NonLocalFilter(channels)


@SMOOTHING_KINDS.register("embedded_gaussian")
def _embedded_gaussian(channels: int, kernel: int, *, embed_channels: int | None = None) -> nn.Module:
    """Embedded Gaussian (Eqs. 13, 15); ``embed_channels`` defaults to ``max(1, channels // 2)``."""
    return NonLocalFilter(channels, max(1, channels // 2) if embed_channels is None else embed_channels)


@SMOOTHING_KINDS.register("identity")
def _identity(channels: int, kernel: int) -> nn.Module:
    """Identity-initialised depthwise convolution (appendix G)."""
    return ConvFilter(channels, kernel, "identity")


@SMOOTHING_KINDS.register("random")
def _random(channels: int, kernel: int, *, seed: int = 0) -> nn.Module:
    """Randomly initialised depthwise convolution (appendix G), reproducible through ``seed``."""
    return ConvFilter(channels, kernel, "random", seed)


def kind_options(kind: str) -> dict[str, Any]:
    """The keyword options of smoothing ``kind`` with their defaults (``{}`` for kinds without options)."""
    factory = SMOOTHING_KINDS.get(kind)
    params = list(inspect.signature(factory).parameters.values())
    return {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}


class SmoothingBlock(nn.Module):
    """Feature-map smoothing block of Figure 2: ``x + conv1x1(smooth(x))``.

    Args:
        channels: number of channels C of the feature map.
        kind: one of ``SMOOTHING_KINDS.names()`` (see the module docstring for the paper equation of each).
        kernel: odd window size K of the local filters and of the ``identity``/``random`` convolutions
            (3 in the paper); not used by the non-local kinds.
        **options: options of the kind: ``border_type`` (mean, median, gaussian), ``sigma`` (gaussian),
            ``embed_channels`` (embedded_gaussian), ``seed`` (random).

    Tensor contract: float ``(N, C, H, W)`` -> ``(N, C, H, W)``. Children: ``smooth`` (the smoothing
    operation) and ``conv`` (the 1x1 convolution); parameters are initialised from the global torch RNG
    (except the ``random`` kernel, which uses ``seed``).
    """

    def __init__(self, channels: int, kind: str = "mean", kernel: int = 3, **options: Any) -> None:
        super().__init__()
        check_int(channels, "channels", 1)
        factory = SMOOTHING_KINDS.get(kind)
        kernel = _check_kernel(kernel)
        valid = kind_options(kind)
        unknown = sorted(set(options) - set(valid))
        if unknown:
            expected = ", ".join(valid) or "(none)"
            raise ValueError(f"smoothing kind {kind!r}: unknown option(s) {', '.join(unknown)}; expected: {expected}")
        self.channels, self.kind, self.kernel, self.options = channels, kind, kernel, dict(options)
        self.smooth = factory(channels, kernel, **options)
        self.conv = nn.Conv2d(channels, channels, 1)

    def check_size(self, height: int, width: int) -> None:
        """Raise ``ValueError`` when the block cannot filter an ``H x W`` feature map (circular padding of a map
        smaller than ``kernel // 2``); every other size works."""
        if isinstance(self.smooth, LocalFilter):
            self.smooth.padding_mode(height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"SmoothingBlock: expected a feature map of shape (N, {self.channels}, H, W), got {tuple(x.shape)}"
            )
        return x + self.conv(self.smooth(x))

    def extra_repr(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"channels={self.channels}, kind={self.kind!r}, kernel={self.kernel}{opts}"
