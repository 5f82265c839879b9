"""The 15 common corruptions of Hendrycks & Dietterich (2019), at 5 severities, computed on the fly.

Tensor contract: every corruption is ``fn(x, severity, generator=None)`` with ``x`` float ``(N, C, H, W)`` in
[0, 1] (C = 1 or 3, any size; 28 and 32 are the tested ones), ``severity`` an int in 1..5, and returns a tensor of
the same shape, dtype and device in [0, 1]. Randomness comes only from ``generator`` (a ``torch.Generator``; the
global torch RNG when ``None``), so a seeded generator gives identical results.

Parameter tables: every table below is copied from the CIFAR-10-C script of the paper's code
(``hendrycks/robustness``, ``ImageNet-C/create_c/make_cifar_c.py``; tables ``c = [...]`` of each function).
Spatial parameters (blur radii, displacement sizes, motion lengths) are given for 32 x 32 images there and are
scaled here by ``min(H, W) / 32`` (except the sub-pixel defocus radii, see :func:`defocus_blur`); intensity
parameters (noise levels, blend factors, JPEG quality) are used as is.
Implementation differences from the reference (which uses OpenCV, ImageMagick (Wand), scikit-image and PIL on
single images) are noted per function; everything here is torch / numpy / PIL (JPEG only), batched over the
examples except the per-image JPEG round trip and glass blur's sequential pixel swaps (a loop over pixels).
"""

from __future__ import annotations

import functools
import io
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .._checks import check_images
from .._registry import Registry

Corruption = Callable[..., torch.Tensor]
CORRUPTIONS: Registry[Corruption] = Registry("corruption")
REFERENCE_SIZE = 32  # the CIFAR tables are for 32 x 32 images


def _check_severity(severity: object) -> int:
    if not isinstance(severity, int) or isinstance(severity, bool) or not 1 <= severity <= 5:
        raise ValueError(f"severity: expected an integer in 1..5, got {severity!r}")
    return severity


def _corruption(fn: Corruption) -> Corruption:
    """Validate input and severity, run without autograd, keep the dtype, and register ``fn`` under its name."""

    @functools.wraps(fn)
    def checked(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
        check_images(x)
        if x.shape[1] not in (1, 3):
            raise ValueError(f"x: expected 1 or 3 channels, got {x.shape[1]}")
        _check_severity(severity)
        with torch.no_grad():
            return fn(x.detach(), severity, generator).to(x.dtype)

    CORRUPTIONS.register(fn.__name__)(checked)
    return checked


def _scale(x: torch.Tensor) -> float:
    return min(x.shape[-2:]) / REFERENCE_SIZE


def _numpy_rng(generator: torch.Generator | None) -> np.random.Generator:
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return np.random.default_rng(seed)


def _rand(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.rand(shape, generator=generator, dtype=x.dtype).to(x.device)


def _randn(shape: tuple[int, ...], x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=x.dtype).to(x.device)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """Luma ``(N, 1, H, W)`` (ITU-R 601 weights, as OpenCV's RGB2GRAY) of a 1- or 3-channel batch."""
    if x.shape[1] != 3:
        return x.mean(1, keepdim=True)
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def _conv(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Depthwise 2-D convolution with one ``(kh, kw)`` kernel and reflect padding (OpenCV's default border)."""
    kh, kw = kernel.shape
    ph, pw = kh // 2, kw // 2
    ph, pw = min(ph, x.shape[2] - 1), min(pw, x.shape[3] - 1)
    k = kernel[kh // 2 - ph : kh // 2 + ph + 1, kw // 2 - pw : kw // 2 + pw + 1]
    k = (k / k.sum()).to(x)[None, None].repeat(x.shape[1], 1, 1, 1)
    return F.conv2d(F.pad(x, (pw, pw, ph, ph), mode="reflect"), k, groups=x.shape[1])


def _gaussian_kernel(sigma: float, truncate: float = 3.0) -> torch.Tensor:
    r = max(1, math.ceil(truncate * sigma))
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * max(sigma, 1e-6) ** 2))
    return torch.outer(g, g) / g.sum() ** 2


def _affine_sample(x: torch.Tensor, theta: torch.Tensor, padding: str = "reflection") -> torch.Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding, align_corners=False)


def _zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Central zoom by ``factor`` >= 1, output the size of ``x`` (the reference's ``clipped_zoom``)."""
    theta = torch.tensor([[1 / factor, 0, 0], [0, 1 / factor, 0]], dtype=x.dtype).expand(x.shape[0], 2, 3)
    return _affine_sample(x, theta, "border")


def _shift(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Translate each image by ``(dx, dy)`` pixels ``(N,)`` (bilinear, border replicated)."""
    n, _, h, w = x.shape
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = 1
    theta[:, 1, 1] = 1
    theta[:, 0, 2] = -2 * dx.cpu().to(x.dtype) / w
    theta[:, 1, 2] = -2 * dy.cpu().to(x.dtype) / h
    return _affine_sample(x, theta, "border")


def _motion_blur(x: torch.Tensor, radius: float, sigma: float, angle_deg: torch.Tensor) -> torch.Tensor:
    """One-sided Gaussian-weighted line blur at per-example angles (ImageMagick's ``-motion-blur radius x sigma``)."""
    length = max(2, round(2 * radius) + 1)
    weights = torch.exp(-(torch.arange(length, dtype=torch.float64) ** 2) / (2 * sigma**2))
    weights = weights[weights >= 1e-4 * weights[0]]
    weights = (weights / weights.sum()).tolist()
    rad = torch.deg2rad(angle_deg.to(torch.float64))
    out = weights[0] * x
    for i, wgt in enumerate(weights[1:], start=1):
        out = out + wgt * _shift(x, i * torch.cos(rad), i * torch.sin(rad))
    return out


def _plasma_fractal(n: int, mapsize: int, wibbledecay: float, rng: np.random.Generator) -> np.ndarray:
    """Diamond-square fractal maps ``(n, mapsize, mapsize)`` in [0, 1] (the reference's ``plasma_fractal``)."""
    maparray = np.zeros((n, mapsize, mapsize))
    stepsize, wibble = mapsize, 100.0

    def wibbledmean(array: np.ndarray) -> np.ndarray:
        return array / 4 + wibble * rng.uniform(-wibble, wibble, array.shape)

    while stepsize >= 2:
        half = stepsize // 2
        corner = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        square = corner + np.roll(corner, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        maparray[:, half:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(square)
        dr = maparray[:, half:mapsize:stepsize, half:mapsize:stepsize]
        ul = maparray[:, 0:mapsize:stepsize, 0:mapsize:stepsize]
        lt = dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2)
        maparray[:, 0:mapsize:stepsize, half:mapsize:stepsize] = wibbledmean(lt)
        tt = dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1)
        maparray[:, half:mapsize:stepsize, 0:mapsize:stepsize] = wibbledmean(tt)
        stepsize //= 2
        wibble /= wibbledecay
    maparray -= maparray.min(axis=(1, 2), keepdims=True)
    return maparray / maparray.max(axis=(1, 2), keepdims=True)


# ----------------------------------------------------------------------------------------------------- noise


@_corruption
def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive Gaussian noise, std ``[0.04, 0.06, 0.08, 0.09, 0.10]``. ``(N, C, H, W)`` in [0, 1]."""
    c = [0.04, 0.06, 0.08, 0.09, 0.10][severity - 1]
    return (x + c * _randn(tuple(x.shape), x, generator)).clamp(0, 1)


@_corruption
def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Poisson (shot) noise ``Poisson(x * c) / c``, ``c = [500, 250, 100, 75, 50]``. ``(N, C, H, W)`` in [0, 1]."""
    c = [500, 250, 100, 75, 50][severity - 1]
    rate = (x * c).to(torch.float64).cpu()
    return (torch.poisson(rate, generator=generator) / c).to(x).clamp(0, 1)


@_corruption
def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Salt-and-pepper noise (scikit-image ``s&p``, salt:pepper 1:1), amount ``[.01, .02, .03, .05, .07]``."""
    c = [0.01, 0.02, 0.03, 0.05, 0.07][severity - 1]
    hit = _rand(tuple(x.shape), x, generator) < c
    salt = _rand(tuple(x.shape), x, generator) < 0.5
    return torch.where(hit, salt.to(x.dtype), x)


@_corruption
def speckle_noise(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Multiplicative noise ``x + x * N(0, c)``, ``c = [.06, .1, .12, .16, .2]``. ``(N, C, H, W)`` in [0, 1]."""
    c = [0.06, 0.1, 0.12, 0.16, 0.2][severity - 1]
    return (x + x * c * _randn(tuple(x.shape), x, generator)).clamp(0, 1)


# ------------------------------------------------------------------------------------------------------ blur


@_corruption
def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Disk kernel of radius ``r`` smoothed by a 3x3 Gaussian ``sigma`` (``(r, sigma)`` from
    ``[(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)]``). Not scaled with the image size: the radii are
    sub-pixel to 1.5 px and scaling them by 28/32 would change the discrete disk (r=1 -> one pixel). Deterministic."""
    radius, alias = [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)][severity - 1]
    r = max(1, math.ceil(radius)) + 1
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).to(torch.float64)
    g = torch.exp(-(torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64) ** 2) / (2 * alias**2))
    k3 = torch.outer(g, g) / g.sum() ** 2
    disk = F.conv2d(F.pad(disk[None, None], (1, 1, 1, 1)), k3[None, None])[0, 0]
    return _conv(x, disk).clamp(0, 1)


@_corruption
def glass_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Gaussian blur, local pixel shuffling, Gaussian blur again; ``(sigma, max_delta, iterations)`` from
    ``[(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]``. The reference's sequential swaps are
    kept (loop over pixels, vectorised over the batch and channels)."""
    sigma, max_delta, iterations = [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)][severity - 1]
    sigma *= _scale(x)
    n, _, h, w = x.shape
    img = _conv(x, _gaussian_kernel(sigma)).cpu().numpy().copy()
    rng = _numpy_rng(generator)
    rows = np.arange(n)
    for _ in range(iterations):
        for i in range(h - max_delta, max_delta, -1):
            for j in range(w - max_delta, max_delta, -1):
                dx, dy = rng.integers(-max_delta, max_delta + 1, size=(2, n))
                ip, jp = i + dy, j + dx
                ip, jp = np.clip(ip, 0, h - 1), np.clip(jp, 0, w - 1)
                i_, j_ = min(i, h - 1), min(j, w - 1)
                a = img[rows, :, i_, j_].copy()
                img[rows, :, i_, j_] = img[rows, :, ip, jp]
                img[rows, :, ip, jp] = a
    out = torch.from_numpy(img).to(x)
    return _conv(out, _gaussian_kernel(sigma)).clamp(0, 1)


@_corruption
def motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Motion blur at a uniform random angle in [-45, 45] degrees per image, ``(radius, sigma)`` from
    ``[(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)]`` (scaled to the image size); a one-sided Gaussian line
    kernel built with bilinear shifts replaces ImageMagick's ``motion_blur``."""
    radius, sigma = [(10, 1), (10, 1.5), (10, 2), (10, 2.5), (12, 3)][severity - 1]
    s = _scale(x)
    angle = torch.rand((x.shape[0],), generator=generator, dtype=torch.float64) * 90 - 45
    return _motion_blur(x, radius * s, sigma * s, angle).clamp(0, 1)


@_corruption
def zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Average of the image and its central zooms by ``1, 1.01, ..., z_max``, ``z_max`` in
    ``[1.05, 1.10, 1.15, 1.20, 1.25]`` (the reference's ``np.arange(1, z_max + 0.01, 0.01)``). Deterministic."""
    z_max = [1.06, 1.11, 1.16, 1.21, 1.26][severity - 1]
    zooms = np.arange(1, z_max, 0.01)
    out = x.clone()
    for z in zooms:
        out = out + _zoom(x, float(z))
    return (out / (len(zooms) + 1)).clamp(0, 1)


# --------------------------------------------------------------------------------------------------- weather


@_corruption
def snow(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Snow layer: Gaussian noise ``(loc, scale)``, zoomed by ``zoom``, thresholded, motion-blurred (radius,
    sigma, angle uniform in [-135, -45]) and added twice (second copy rotated 180 degrees) to the image blended
    towards its brightened luma by ``blend``; ``(loc, scale, zoom, threshold, radius, sigma, blend)`` from
    ``[(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
    (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)]``."""
    loc, scale, zoom, threshold, radius, sigma, blend = [
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    ][severity - 1]
    s = _scale(x)
    n, _, h, w = x.shape
    layer = loc + scale * _randn((n, 1, h, w), x, generator)
    layer = _zoom(layer, zoom) if zoom != 1 else layer
    layer = torch.where(layer < threshold, torch.zeros_like(layer), layer)
    angle = torch.rand((n,), generator=generator, dtype=torch.float64) * 90 - 135
    layer = _motion_blur(layer, radius * s, sigma * s, angle)
    base = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return (base + layer + layer.flip(-1, -2)).clamp(0, 1)


@_corruption
def fog(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Plasma-fractal fog ``(x + c * fractal) * max(x) / (max(x) + c)``, ``(c, wibbledecay)`` from
    ``[(.2, 3), (.5, 3), (.75, 2.5), (1, 2), (1.5, 1.75)]``; one diamond-square map per image."""
    c, decay = [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)][severity - 1]
    n, _, h, w = x.shape
    mapsize = 2 ** math.ceil(math.log2(max(h, w, 2)))
    frac = torch.from_numpy(_plasma_fractal(n, mapsize, decay, _numpy_rng(generator))[:, None, :h, :w]).to(x)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    return ((x + c * frac) * max_val / (max_val + c)).clamp(0, 1)


@_corruption
def brightness(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Raise the HSV value channel by ``[.05, .1, .15, .2, .3]`` (clipped to 1), hue and saturation kept; for one
    channel this is ``x + c``. Deterministic."""
    c = [0.05, 0.1, 0.15, 0.2, 0.3][severity - 1]
    v = x.amax(1, keepdim=True)
    v_new = (v + c).clamp(0, 1)
    scaled = x * v_new / v.clamp_min(1e-12)
    return torch.where(v > 0, scaled, v_new.expand_as(x)).clamp(0, 1)


@_corruption
def contrast(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Shrink towards the per-image, per-channel mean by ``[.75, .5, .4, .3, .15]``. Deterministic."""
    c = [0.75, 0.5, 0.4, 0.3, 0.15][severity - 1]
    means = x.mean(dim=(2, 3), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1)


# ------------------------------------------------------------------------------------------------------ digital


@_corruption
def elastic_transform(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random affine warp (corners moved up to ``alpha_affine`` px) and a Gaussian-smoothed (``sigma``) random
    displacement field of amplitude ``alpha``; ``(alpha, sigma, alpha_affine)`` from ``32 * [(0, 0, .08),
    (.05, .2, .07), (.08, .06, .06), (.1, .04, .05), (.1, .03, .03)]`` (scaled to the image size). The two
    resamplings of the reference are composed into one bilinear ``grid_sample`` (reflect border)."""
    alpha, sigma, alpha_affine = [
        (0, 0, 0.08),
        (0.05, 0.2, 0.07),
        (0.08, 0.06, 0.06),
        (0.1, 0.04, 0.05),
        (0.1, 0.03, 0.03),
    ][severity - 1]
    n, _, h, w = x.shape
    size = min(h, w)
    alpha, sigma, alpha_affine = alpha * size, sigma * size, alpha_affine * size
    # affine: three reference points moved by uniform(-alpha_affine, alpha_affine), solved for the 2x3 matrix
    cs = min(h, w) // 3
    cx, cy = w // 2, h // 2
    src = torch.tensor([[cx + cs, cy + cs], [cx + cs, cy - cs], [cx - cs, cy - cs]], dtype=torch.float64)
    jitter = (torch.rand((n, 3, 2), generator=generator, dtype=torch.float64) * 2 - 1) * alpha_affine
    dst = src + jitter
    src_h = torch.cat([src, torch.ones(3, 1, dtype=torch.float64)], 1)  # (3, 3)
    m = torch.linalg.solve(src_h, dst).transpose(1, 2)  # (n, 2, 3): dst = m @ [src, 1]
    # displacement field
    field = torch.rand((n, 2, h, w), generator=generator, dtype=torch.float64) * 2 - 1
    if sigma > 0:
        field = _conv(field, _gaussian_kernel(sigma))
    field = field * alpha
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    # output pixel (xs, ys) reads the warped image at (xs + dx, ys + dy); the warped image at p reads x at m^-1 p
    px, py = xs + field[:, 0], ys + field[:, 1]
    a = torch.cat([m, torch.tensor([0, 0, 1], dtype=torch.float64).expand(n, 1, 3)], 1)
    inv = torch.linalg.inv(a)
    sx = inv[:, 0, 0, None, None] * px + inv[:, 0, 1, None, None] * py + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * px + inv[:, 1, 1, None, None] * py + inv[:, 1, 2, None, None]
    grid = torch.stack([(2 * sx + 1) / w - 1, (2 * sy + 1) / h - 1], -1).to(x)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out.clamp(0, 1)


@_corruption
def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Box-downsample to ``[0.95, 0.9, 0.85, 0.75, 0.65]`` of the size and upsample back (nearest, as PIL's BOX
    up-sampling). Deterministic."""
    c = [0.95, 0.9, 0.85, 0.75, 0.65][severity - 1]
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * c)), max(1, int(w * c))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest").clamp(0, 1)


@_corruption
def jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """JPEG round trip through PIL at quality ``[80, 65, 58, 50, 40]`` (one image at a time). Deterministic."""
    quality = [80, 65, 58, 50, 40][severity - 1]
    arr = (x.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for img in arr:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)  # mode L or RGB from the uint8 shape
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=quality)
        dec = np.asarray(Image.open(buf)).reshape(img.shape)
        out.append(dec)
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x) / 255


def corrupt(x: torch.Tensor, name: str, severity: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Apply the registered corruption ``name`` (one of ``CORRUPTIONS.names()``) at ``severity`` in 1..5.

    ``x`` float ``(N, C, H, W)`` in [0, 1] with C = 1 or 3; returns the same shape, dtype and device in [0, 1].
    """
    return CORRUPTIONS.get(name)(x, severity, generator)
