"""Noisy linear imputation (Rong et al. 2022, ROAD): removed pixels filled from their neighbours, plus noise.

Used by :func:`attrobust.metrics.faithfulness.road` (and re-exported there). Tensor contract: images ``x`` float
``(N, C, H, W)`` in [0, 1], masks bool ``(N, H, W)``; the sparse systems are solved on the CPU in float64.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.sparse.linalg import spsolve

from attrobust._checks import check_images, check_positive

#: Neighbour offsets (row, column) and weights of the noisy linear imputation (Rong et al. 2022): the four direct
#: neighbours weigh 1/6, the four diagonal ones 1/12 (the eight weights sum to 1).
NEIGHBOUR_WEIGHTS = (
    ((-1, 0), 1 / 6),
    ((1, 0), 1 / 6),
    ((0, -1), 1 / 6),
    ((0, 1), 1 / 6),
    ((-1, -1), 1 / 12),
    ((-1, 1), 1 / 12),
    ((1, -1), 1 / 12),
    ((1, 1), 1 / 12),
)


def _impute_one(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Noise-free imputation of one image ``(C, H, W)`` (float64) at the True pixels of ``removed`` ``(H, W)``.

    Unknown pixel ``i`` with in-image neighbours ``j`` (weights ``w_ij`` from :data:`NEIGHBOUR_WEIGHTS`) obeys
    ``(sum_j w_ij) v_i - sum_{j removed} w_ij v_j = sum_{j known} w_ij x_j``, i.e. ``v_i`` is the weighted mean of
    its neighbours' (known or imputed) values. All unknowns of an image form one sparse system, solved once for
    the C channels (C right-hand sides).
    """
    c, h, w = image.shape
    rm = np.flatnonzero(removed.ravel())
    k = rm.size
    if k == 0:
        return np.zeros((0, c))
    var = np.full(h * w, -1, dtype=np.int64)
    var[rm] = np.arange(k)
    r, col = np.divmod(rm, w)
    flat = image.reshape(c, h * w)
    diag = np.zeros(k)
    rhs = np.zeros((k, c))
    rows, cols, vals = [], [], []
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS:
        rr, cc = r + dr, col + dc
        inside = np.flatnonzero((rr >= 0) & (rr < h) & (cc >= 0) & (cc < w))
        nb = rr[inside] * w + cc[inside]
        diag[inside] += weight
        unknown = var[nb] >= 0
        rows.append(inside[unknown])
        cols.append(var[nb[unknown]])
        vals.append(np.full(int(unknown.sum()), -weight))
        known = ~unknown  # each row appears once per offset: plain fancy-index accumulation is exact
        rhs[inside[known]] += weight * flat[:, nb[known]].T
    ids = np.arange(k)
    rows, cols, vals = [*rows, ids], [*cols, ids], [*vals, diag]
    a = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(k, k))
    return np.asarray(spsolve(a, rhs)).reshape(k, c)


def noisy_linear_impute(
    x: torch.Tensor,
    mask: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Noisy linear imputation (Rong et al. 2022): fill the masked pixels from their neighbours, plus noise.

    Each removed pixel's value is the weighted average of its 8 neighbours (direct neighbours weigh 1/6,
    diagonal ones 1/12; at the border the weights of the neighbours inside the image are renormalised), where a
    neighbour that is itself removed contributes its imputed value; known pixels stay fixed. All removed pixels
    of an image are solved jointly as one sparse linear system (``scipy.sparse.linalg.spsolve``; the matrix is a
    weighted graph Laplacian restricted to the removed pixels, non-singular whenever at least one pixel is
    known), with one right-hand side per channel. Then i.i.d. Gaussian noise of standard deviation ``noise``
    (pixel units) is added to every imputed value (drawn from ``generator`` on its device) and the result is
    clamped to [0, 1].

    Args:
        x: images, float ``(N, C, H, W)`` in [0, 1] (any device; the systems are solved on the CPU in float64).
        mask: bool ``(N, H, W)``, True where a pixel is removed (in all channels); no image may be fully masked.
        noise: standard deviation of the added noise, >= 0 (0 gives the exact linear imputation).
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        Tensor of ``x``'s shape, dtype and device; unmasked pixels are exactly those of ``x``.
    """
    check_images(x)
    n, _, h, w = x.shape
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != (n, h, w):
        got = f"{tuple(mask.shape)} {mask.dtype}" if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise ValueError(f"mask: expected a bool tensor of shape ({n}, {h}, {w}), got {got}")
    check_positive(float(noise), "noise", allow_zero=True)
    full = mask.flatten(1).all(1)
    if bool(full.any()):
        raise ValueError(
            f"mask: expected at least one known pixel per image (imputation needs neighbours), got "
            f"{int(full.sum())} fully masked image(s)"
        )
    images = x.detach().to("cpu", torch.float64).numpy()
    masks = mask.detach().cpu().numpy()
    out = x.detach().to("cpu", torch.float64).clone()
    for i in range(n):
        if not masks[i].any():
            continue
        values = torch.from_numpy(_impute_one(images[i], masks[i]))  # (k, C)
        if noise > 0:
            draw = torch.randn(
                values.shape,
                generator=generator,
                dtype=torch.float64,
                device=generator.device if generator is not None else "cpu",
            )
            values = values + noise * draw.cpu()
        rows, cols = np.nonzero(masks[i])
        out[i][:, torch.from_numpy(rows), torch.from_numpy(cols)] = values.T.clamp(0.0, 1.0)
    return out.to(x.device, x.dtype)


__all__ = ["NEIGHBOUR_WEIGHTS", "noisy_linear_impute"]
