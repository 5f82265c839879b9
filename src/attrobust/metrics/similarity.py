"""Similarity of attribution maps: top-k intersection and Kendall's tau-b.

Tensor contract: attributions are float tensors ``(N, C, H, W)`` of the input's shape; ranking metrics work on
maps ``(N, D)`` obtained with :func:`saliency_map` (|a| summed over channels, flattened, ``D = H * W``). Every
metric returns a per-example tensor ``(N,)``; aggregation is the caller's. Bad input raises ``ValueError``.

The kernels are defined in :mod:`attrobust._ranking` (attacks use them to select steps) and re-exported here.
"""

from __future__ import annotations

from attrobust._ranking import kendall_tau, saliency_map, topk_intersection

__all__ = ["kendall_tau", "saliency_map", "topk_intersection"]
