"""Similarity of attribution maps: top-k intersection, Kendall's tau-b, Spearman, cosine, Pearson, SSIM, and the
Goodman-Kruskal gamma that measures how concordant two metrics are.

Tensor contract: attributions are float tensors ``(N, C, H, W)`` of the input's shape; ranking and correlation
metrics work on maps ``(N, D)`` obtained with :func:`saliency_map` (|a| summed over channels, flattened,
``D = H * W``): a 4-dim input is converted first, a 2-dim input is used as given (pass ``a.flatten(1)`` to compare
signed raw attributions). :func:`ssim` keeps the spatial layout instead: maps ``(N, H, W)`` or images
``(N, C, H, W)``. Every metric returns a per-example tensor ``(N,)`` on the input's device (float64 for float64
input, else float32); aggregation is the caller's. Bad input raises ``ValueError``.

The top-k and Kendall kernels are defined in :mod:`attrobust._ranking` (attacks use them to select steps) and
re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attrobust._checks import check_int, check_positive, warn_once
from attrobust._ranking import (
    as_maps,
    by_chunks,
    check_map_pair,
    kendall_tau,
    order_keys,
    pair_counts,
    result_dtype,
    run_starts,
    saliency_map,
    topk_intersection,
)


def cosine_rows(a: torch.Tensor, b: torch.Tensor, what: str) -> torch.Tensor:
    """Row-wise cosine of two ``(N, D)`` float64 tensors; NaN (and a warning) where a row has zero norm."""
    norms = torch.linalg.vector_norm(a, dim=1) * torch.linalg.vector_norm(b, dim=1)
    zero = norms == 0
    if bool(zero.any()):
        warn_once(f"{what}: some rows are all zero (or constant), so the result is undefined there and set to NaN")
    return ((a * b).sum(1) / norms.masked_fill(zero, 1.0)).masked_fill(zero, float("nan")).clamp(-1.0, 1.0)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``<a, b> / (||a|| ||b||)`` between each pair of maps.

    Args:
        a, b: maps ``(N, D)`` or attributions ``(N, C, H, W)`` (converted with :func:`saliency_map` first);
            same shape, finite real values, CPU or CUDA.

    Returns:
        Tensor ``(N,)`` in [-1, 1] (float64 arithmetic; float64 for float64 input, else float32). A row that is all
        zero in ``a`` or ``b`` has no defined cosine and gives NaN (with a one-time warning). Differentiable.
    """
    a, b = as_maps(a, b)
    return cosine_rows(a.double(), b.double(), "cosine").to(result_dtype(a))


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Pearson's correlation coefficient between each pair of maps (the cosine of the centred rows).

    Args:
        a, b: maps ``(N, D)`` or attributions ``(N, C, H, W)`` (converted with :func:`saliency_map` first);
            same shape, finite real values, CPU or CUDA.

    Returns:
        Tensor ``(N,)`` in [-1, 1], ``scipy.stats.pearsonr(a_i, b_i).statistic`` for every row; a row that is
        constant in ``a`` or ``b`` (including ``D == 1``) gives NaN, as scipy does. Differentiable.
    """
    a, b = as_maps(a, b)
    a64, b64 = a.double(), b.double()
    a64 = a64 - a64.mean(1, keepdim=True)
    b64 = b64 - b64.mean(1, keepdim=True)
    norms = torch.linalg.vector_norm(a64, dim=1) * torch.linalg.vector_norm(b64, dim=1)
    constant = norms == 0
    r = (a64 * b64).sum(1) / norms.masked_fill(constant, 1.0)
    return r.clamp(-1.0, 1.0).masked_fill(constant, float("nan")).to(result_dtype(a))


def _average_ranks(t: torch.Tensor) -> torch.Tensor:
    """Row-wise ranks ``1..D`` of ``(N, D)`` values, tied values sharing their average rank (float64)."""
    n, d = t.shape
    keys, order = order_keys(t).sort(dim=1)
    new_run = run_starts(keys)
    run_id = new_run.cumsum(1) - 1
    pos = torch.arange(d, device=t.device).expand(n, d)
    first = torch.zeros_like(run_id).scatter_reduce_(1, run_id, pos, reduce="amin", include_self=False)
    last = torch.zeros_like(run_id).scatter_reduce_(1, run_id, pos, reduce="amax", include_self=False)
    avg = (first.gather(1, run_id) + last.gather(1, run_id)).double() / 2 + 1
    return torch.empty_like(avg).scatter_(1, order, avg)


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation between each pair of maps: Pearson's r of the average ranks.

    Args:
        a, b: maps ``(N, D)`` or attributions ``(N, C, H, W)`` (converted with :func:`saliency_map` first);
            same shape, finite real values, CPU or CUDA. Values are only compared (exact in the input dtype).

    Returns:
        Tensor ``(N,)`` in [-1, 1], ``scipy.stats.spearmanr(a_i, b_i).statistic`` for every row (ties get the
        average of their ranks); a row that is constant in ``a`` or ``b`` gives NaN, as scipy does. Not
        differentiable (ranks).
    """
    a, b = as_maps(a, b)
    with torch.no_grad():
        return pearson(_average_ranks(a.detach()), _average_ranks(b.detach())).to(result_dtype(a))


def _gamma_chunk(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    total, ties_u, ties_v, ties_joint, discordant = pair_counts(u, v)
    untied = total - ties_u - ties_v + ties_joint  # concordant + discordant
    gamma = (untied - 2 * discordant).double() / untied.clamp(min=1).double()
    return gamma.masked_fill(untied == 0, float("nan"))


def goodman_kruskal_gamma(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Goodman and Kruskal's gamma: how concordant two measurements are over a set of items, per row.

    ``gamma = (C - D) / (C + D)`` over all pairs ``i < j`` of the ``M`` items of a row, where a pair is concordant
    (C) when ``u`` and ``v`` order it the same way and discordant (D) when they order it oppositely; pairs tied in
    ``u`` or in ``v`` are dropped. The IGR paper (Fig. 2b) uses it to show that cosine similarity is more
    concordant with Kendall's tau than Pearson's r: ``u`` = Kendall's tau and ``v`` = cosine of many attribution
    pairs (one row, ``N = 1``), or several sets at once (one set per row).

    Args:
        u, v: float or integer tensors ``(N, M)`` (``N`` sets of ``M`` paired measurements), same shape, finite,
            CPU or CUDA. Values are only compared.

    Returns:
        Tensor ``(N,)`` in [-1, 1] (float64 for float64 input, else float32); NaN for a row without an untied pair.
        Exact, O(M log M) work and O(M) memory per row (the pair counts of :func:`kendall_tau`).
    """
    for name, t in (("u", u), ("v", v)):
        if isinstance(t, torch.Tensor) and t.dim() != 2:
            raise ValueError(f"{name}: expected values of shape (N, M) (2 dims), got {tuple(t.shape)}")
    u, v = as_maps(u, v)
    return by_chunks(_gamma_chunk, u, v).to(result_dtype(u))


def _check_spatial_pair(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate maps ``(N, H, W)`` / images ``(N, C, H, W)`` for SSIM and return them as ``(N, C, H, W)``."""
    check_map_pair(a, b, {3: "maps (N, H, W)", 4: "images (N, C, H, W)"})
    if a.numel() == 0:
        raise ValueError(f"a, b: expected a non-empty batch of non-empty maps, got shape {tuple(a.shape)}")
    for name, t in (("a", a), ("b", b)):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name}: expected finite values, got {int((~torch.isfinite(t)).sum())} NaN/inf entries")
    if a.dim() == 3:
        a, b = a[:, None], b[:, None]
    return a, b


def _reflect_index(size: int, radius: int, device: torch.device) -> torch.Tensor:
    """Indices that pad an axis of ``size`` by ``radius`` on both sides, mirroring with the edge repeated
    (``d c b a | a b c d | d c b a``: scipy.ndimage's ``"reflect"`` mode), for any radius."""
    i = torch.arange(-radius, size + radius, device=device) % (2 * size)
    return torch.where(i < size, i, 2 * size - 1 - i)


def _filter2d(planes: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable filter of ``(P, H, W)`` planes with the 1-D ``kernel`` along both axes, reflect-padded."""
    r = kernel.numel() // 2
    h, w = planes.shape[-2:]
    padded = planes[:, _reflect_index(h, r, planes.device)][:, :, _reflect_index(w, r, planes.device)]
    out = F.conv2d(padded[:, None], kernel.view(1, 1, -1, 1))
    return F.conv2d(out, kernel.view(1, 1, 1, -1))[:, 0]


def ssim(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    win_size: int | None = None,
    data_range: float | torch.Tensor | None = None,
    gaussian_weights: bool = False,
    sigma: float = 1.5,
    K1: float = 0.01,
    K2: float = 0.03,
    use_sample_covariance: bool = True,
) -> torch.Tensor:
    """Mean structural similarity index (Wang et al. 2004) of each pair of maps, batched with ``conv2d``.

    Same conventions as ``skimage.metrics.structural_similarity`` (the test oracle): local means, variances and
    covariance from a ``win_size`` x ``win_size`` uniform window, or from a Gaussian of width ``sigma`` truncated
    at 3.5 sigma when ``gaussian_weights`` (filters mirror the border, scipy's ``"reflect"`` mode); sample
    covariance ``NP / (NP - 1)`` with ``NP = win_size ** 2`` unless ``use_sample_covariance=False``;
    ``C1 = (K1 R)^2``, ``C2 = (K2 R)^2`` with ``R = data_range``; the SSIM image is averaged after cropping
    ``(win_size - 1) // 2`` pixels from every border. Images with channels are compared channel by channel and the
    channel means averaged (scikit-image's ``channel_axis``).

    Args:
        a, b: maps ``(N, H, W)`` or images ``(N, C, H, W)``, same shape, finite; ``H, W >= win_size``. To compare
            attribution saliency maps use ``saliency_map(a).view(N, H, W)``.
        win_size: odd window side; ``None`` picks 7, or 11 with ``gaussian_weights`` (scikit-image's defaults).
        data_range: ``R``, a positive float or a tensor ``(N,)`` of per-example ranges. ``None`` (scikit-image
            refuses floats without one) takes each example's value range over both maps, ``max(a, b) - min(a, b)``;
            an example where both maps are the same constant then gets SSIM 1.
        gaussian_weights, sigma, K1, K2, use_sample_covariance: as in scikit-image.

    Returns:
        Tensor ``(N,)`` (float64 arithmetic; float64 for float64 input, else float32), at most 1.
    """
    a, b = _check_spatial_pair(a, b)
    n, c, h, w = a.shape
    check_positive(sigma, "sigma")
    for name, k in (("K1", K1), ("K2", K2)):
        check_positive(k, name, allow_zero=True)
    if win_size is None:
        win_size = 2 * int(3.5 * sigma + 0.5) + 1 if gaussian_weights else 7
    check_int(win_size, "win_size", 3 if use_sample_covariance else 1)
    if win_size % 2 == 0 or win_size > min(h, w):
        raise ValueError(f"win_size: expected an odd integer <= min(H, W) = {min(h, w)}, got {win_size}")
    a64, b64 = a.double(), b.double()
    if data_range is None:
        hi = torch.maximum(a64.flatten(1).amax(1), b64.flatten(1).amax(1))
        lo = torch.minimum(a64.flatten(1).amin(1), b64.flatten(1).amin(1))
        rng = hi - lo
    elif isinstance(data_range, torch.Tensor):
        if data_range.shape != (n,) or not bool((data_range > 0).all()):
            raise ValueError(f"data_range: expected positive values of shape ({n},), got {data_range}")
        rng = data_range.to(device=a.device, dtype=torch.float64)
    else:
        check_positive(float(data_range), "data_range")
        rng = torch.full((n,), float(data_range), dtype=torch.float64, device=a.device)

    if gaussian_weights:
        radius = int(3.5 * sigma + 0.5)
        t = torch.arange(-radius, radius + 1, dtype=torch.float64, device=a.device)
        kernel = torch.exp(-0.5 * (t / sigma) ** 2)
        kernel = kernel / kernel.sum()
    else:
        kernel = torch.full((win_size,), 1.0 / win_size, dtype=torch.float64, device=a.device)
    cov_norm = win_size**2 / (win_size**2 - 1) if use_sample_covariance else 1.0

    x, y = a64.reshape(n * c, h, w), b64.reshape(n * c, h, w)
    ux, uy, uxx, uyy, uxy = _filter2d(torch.cat([x, y, x * x, y * y, x * y]), kernel).split(n * c)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    r = rng.repeat_interleave(c).view(-1, 1, 1)
    c1, c2 = (K1 * r) ** 2, (K2 * r) ** 2
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    pad = (win_size - 1) // 2
    per_channel = s[:, pad : h - pad, pad : w - pad].mean((1, 2)).view(n, c).mean(1)
    return per_channel.masked_fill(rng == 0, 1.0).to(result_dtype(a))


__all__ = [
    "cosine",
    "goodman_kruskal_gamma",
    "kendall_tau",
    "pearson",
    "saliency_map",
    "spearman",
    "ssim",
    "topk_intersection",
]
