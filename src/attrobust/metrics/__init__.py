"""Metrics: pure functions on tensors (attribution maps, logits) returning per-example tensors ``(N,)``.

Tensor contract: attributions ``(N, C, H, W)``, maps for ranking metrics ``(N, D)`` from :func:`saliency_map`,
logits ``(N, K)``, labels int64 ``(N,)``. Aggregation is the caller's. Metrics never import attacks; pairing an
attack with a metric happens in ``attrobust.experiments``.

``METRICS`` maps a name to its function: ``"topk_intersection"`` ``(a, b, k)``, ``"kendall_tau"`` ``(a, b)``,
``"accuracy"`` ``(logits, y)``.
"""

from __future__ import annotations

from attrobust._registry import Registry
from attrobust.metrics.accuracy import accuracy
from attrobust.metrics.similarity import kendall_tau, saliency_map, topk_intersection

METRICS: Registry = Registry("metric")
METRICS.register("topk_intersection")(topk_intersection)
METRICS.register("kendall_tau")(kendall_tau)
METRICS.register("accuracy")(accuracy)

__all__ = ["METRICS", "accuracy", "kendall_tau", "saliency_map", "topk_intersection"]
