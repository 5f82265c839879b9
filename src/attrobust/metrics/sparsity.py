"""Sparsity of attribution maps: the Gini index.

Tensor contract: attributions are float tensors ``(N, C, H, W)`` of the input's shape, maps are ``(N, D)``;
metrics return per-example tensors ``(N,)`` (float64 for float64 input, else float32); aggregation is the
caller's. Bad input raises ``ValueError``.
"""

from __future__ import annotations

import torch

from attrobust._checks import check_maps, warn_once
from attrobust._ranking import result_dtype, saliency_map


def gini(a: torch.Tensor, *, sum_channels: bool = True) -> torch.Tensor:
    """Gini index of ``|a|`` per example (Chalasani et al. 2020; feature-map smoothing paper, eq. 39).

    With ``v = |a|`` flattened to ``d`` features and sorted in non-decreasing order (``v_(1) <= ... <= v_(d)``)::

        G = 1 - 2 * sum_k (v_(k) / ||v||_1) * (d - k + 0.5) / d

    which equals ``sum_k (2k - d - 1) v_(k) / (d ||v||_1)``, Quantus' ``Sparseness``. ``G = 0`` when all
    features are equal, ``G = (d - 1) / d`` when a single one is non-zero (1 in the limit); larger is sparser.

    Args:
        a: attributions ``(N, C, H, W)`` or maps ``(N, D)``, finite real values, CPU or CUDA.
        sum_channels: for 4-dim input, take the saliency map (``|a|`` summed over channels, ``d = H * W``: the
            project's map convention and what Quantus' explanation pipeline feeds its ``Sparseness`` by default);
            ``False`` flattens all ``C * H * W`` values instead. The paper's eq. 39 states a vector ``R^d``
            without saying which.

    Returns:
        Tensor ``(N,)`` in ``[0, (d - 1) / d]``. An all-zero row has no defined index and gives NaN (with a
        one-time warning). Not differentiable (sorting).
    """
    check_maps(a, "a", {2: "maps (N, D)", 4: "attributions (N, C, H, W)"})
    dtype = result_dtype(a)
    with torch.no_grad():
        v = saliency_map(a) if (a.dim() == 4 and sum_channels) else a.abs().flatten(1)
        v = v.detach().double().sort(dim=1).values
        d = v.shape[1]
        k = torch.arange(1, d + 1, dtype=torch.float64, device=v.device)
        total = v.sum(1)
        zero = total == 0
        if bool(zero.any()):
            warn_once("gini: some attributions are all zero; their Gini index is undefined and set to NaN")
        g = ((2 * k - d - 1) * v).sum(1) / (d * total.masked_fill(zero, 1.0))
        return g.masked_fill(zero, float("nan")).to(dtype)


__all__ = ["gini"]
