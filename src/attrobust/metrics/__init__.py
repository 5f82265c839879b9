"""Metrics: pure functions on tensors (attribution maps, logits, boxes) returning per-example tensors ``(N,)``.

Tensor contract: images ``(N, C, H, W)`` in [0, 1], attributions of the input's shape, maps for ranking metrics
``(N, D)`` from :func:`saliency_map`, logits ``(N, K)``, labels int64 ``(N,)``, boxes ``(N, 4)``. Aggregation is
the caller's. The metrics on maps, values, logits and boxes (kinds ``pair``, ``map``, ``values``, ``logits``,
``boxes``, ``boxes_top1`` below) also take numpy arrays and a single example (every input one dim short: two maps
``(D,)`` or attributions ``(C, H, W)``, logits ``(K,)`` with an int label, boxes ``(4,)``), which gives a 0-dim
result (:mod:`.inputs`; each docstring lists its shapes). The faithfulness curves (:func:`road`,
:func:`deletion`, :func:`insertion`) and the bounds (:func:`euclidean_bound`, :func:`cosine_bound`,
:func:`linf_bound`, ...) take ``(model, x, y, ...)`` and are measured by the evaluation suite directly.
Metrics never import attacks; pairing an attack with a metric happens in ``attrobust.experiments``.

The house: ``similarity.py`` (top-k, Kendall, Spearman, cosine, Pearson, SSIM, Goodman-Kruskal gamma; the ranking
kernels come from ``attrobust._ranking``), ``sparsity.py`` (Gini), ``stability.py`` (RIS / ROS / RRS, activation
consistency, image-gradient alignment), ``faithfulness.py`` (ROAD, deletion, insertion) with ``imputation.py``
(noisy linear imputation), ``bounds.py`` (paper 004's upper bounds) with ``_jacobian.py`` (the attribution
Jacobian they use), ``localization.py`` and ``accuracy.py``. Metrics import ``attrobust._checks``, ``_ranking``,
``attributions`` (through :func:`~attrobust.attributions.explainer`) and ``models``, never ``attacks``.

Registry
--------
``METRICS`` maps a name to its function. Metrics take different inputs, so every metric is registered with a
*kind*, and every kind names the positional inputs of its metrics (``METRIC_KIND_INPUTS``):

==============  ========================================  ======================================================
kind            positional inputs                         metrics
==============  ========================================  ======================================================
``pair``        ``(a, b)`` two maps / attributions        topk_intersection (``k=``), kendall_tau, spearman,
                                                          cosine, pearson, ssim (``(N, H, W)`` or 4-dim input)
``map``         ``(a,)`` one map / attribution            gini
``values``      ``(u, v)`` ``(N, M)`` paired measurements goodman_kruskal_gamma
``logits``      ``(logits, y)``                           accuracy
``model``       ``(model, x, y)``                         ris, ros, rrs (``explain=``, rrs also ``layer=``),
                                                          image_gradient_alignment, corruption_accuracy
                                                          (``transforms=``; returns a dict name -> ``(N,)``)
``model_pair``  ``(model, x, x_adv)``                     activation_consistency
``boxes``       ``(pred_boxes, gt_boxes)``                box_iou, gt_known_loc
``boxes_top1``  ``(pred_boxes, gt_boxes, logits, y)``     top1_loc
==============  ========================================  ======================================================

A kind also says what an evaluation must have beyond the clean batch to measure its metrics
(``METRIC_KIND_NEEDS``, read by ``attrobust.experiments.suite``): ``"attack"`` for the kinds that compare each
example with a perturbed version of it (``pair``, ``model_pair``), ``"boxes"`` for those that need ground-truth
boxes (``boxes``, ``boxes_top1``), nothing for the others.

``METRIC_KINDS[name]`` is a metric's kind; :func:`metric_inputs` its input names; :func:`metrics_of_kind` the
names of one kind; :func:`call_metric` calls a metric by name, picking its inputs from a mapping
(``call_metric("kendall_tau", {"a": a, "b": b})``); options (``k``, ``explain``, ...) are keyword arguments.
A new metric is added with ``register_metric(name, kind)(fn)``; a new kind first with
``add_metric_kind(kind, inputs, needs=None)``; :func:`metric_needs` gives a metric's need.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from attrobust._registry import Registry
from attrobust.metrics.accuracy import accuracy, corruption_accuracy
from attrobust.metrics.bounds import (
    attribution_spectral_norm,
    cosine_bound,
    euclidean_bound,
    linf_bound,
    local_linearity_eta,
    modified_euclidean_bound,
)
from attrobust.metrics.faithfulness import PerturbationCurve, deletion, insertion, road
from attrobust.metrics.imputation import noisy_linear_impute
from attrobust.metrics.inputs import accepts_arrays
from attrobust.metrics.localization import box_iou, boxes_from_maps, gt_known_loc, localization_heatmap, top1_loc
from attrobust.metrics.similarity import (
    cosine,
    goodman_kruskal_gamma,
    kendall_tau,
    pearson,
    saliency_map,
    spearman,
    ssim,
    topk_intersection,
)
from attrobust.metrics.sparsity import gini
from attrobust.metrics.stability import (
    activation_consistency,
    image_gradient_alignment,
    relative_stability,
    ris,
    ros,
    rrs,
    uniform_perturbations,
)

Metric = Callable[..., Any]

METRICS: Registry[Metric] = Registry("metric")
METRIC_KIND_INPUTS: dict[str, tuple[str, ...]] = {}
METRIC_KINDS: dict[str, str] = {}
METRIC_KIND_NEEDS: dict[str, str | None] = {}
NEEDS = (None, "attack", "boxes")


def add_metric_kind(kind: str, inputs: tuple[str, ...], needs: str | None = None) -> None:
    """Declare a metric kind whose metrics take the positional ``inputs`` (names, e.g. ``("model", "x", "y")``)
    and, when measured in an evaluation, ``needs`` an attack's perturbed examples (``"attack"``) or ground-truth
    boxes (``"boxes"``) besides the clean batch (None: nothing more)."""
    if not isinstance(kind, str) or not kind:
        raise ValueError(f"kind: expected a non-empty string, got {kind!r}")
    if kind in METRIC_KIND_INPUTS:
        raise ValueError(f"metric kind {kind!r} is already declared")
    if not isinstance(inputs, tuple) or not inputs or not all(isinstance(i, str) and i for i in inputs):
        raise ValueError(f"inputs: expected a non-empty tuple of input names, got {inputs!r}")
    if needs not in NEEDS:
        raise ValueError(f"needs: expected one of {', '.join(map(repr, NEEDS))}, got {needs!r}")
    METRIC_KIND_INPUTS[kind] = inputs
    METRIC_KIND_NEEDS[kind] = needs


def register_metric(name: str, kind: str) -> Callable[[Metric], Metric]:
    """Decorator adding ``fn`` to ``METRICS`` as ``name`` with the declared ``kind``."""
    if kind not in METRIC_KIND_INPUTS:
        raise ValueError(f"kind: expected one of {', '.join(sorted(METRIC_KIND_INPUTS))}, got {kind!r}")

    def add(fn: Metric) -> Metric:
        METRICS.register(name)(fn)
        METRIC_KINDS[name] = kind
        return fn

    return add


def metric_kind(name: str) -> str:
    """The kind of the metric registered as ``name`` (``ValueError`` listing the valid names otherwise)."""
    METRICS.get(name)
    return METRIC_KINDS[name]


def metric_inputs(name: str) -> tuple[str, ...]:
    """Names of the positional inputs of the metric registered as ``name``, e.g. ``("a", "b")``."""
    return METRIC_KIND_INPUTS[metric_kind(name)]


def metric_needs(name: str) -> str | None:
    """What an evaluation needs besides the clean batch to measure the metric ``name``: ``"attack"``,
    ``"boxes"`` or None (see ``METRIC_KIND_NEEDS``)."""
    return METRIC_KIND_NEEDS[metric_kind(name)]


def metrics_of_kind(kind: str) -> list[str]:
    """Sorted names of the registered metrics of ``kind``."""
    if kind not in METRIC_KIND_INPUTS:
        raise ValueError(f"kind: expected one of {', '.join(sorted(METRIC_KIND_INPUTS))}, got {kind!r}")
    return sorted(n for n, k in METRIC_KINDS.items() if k == kind)


def call_metric(name: str, inputs: Mapping[str, Any], **options: Any) -> Any:
    """Call the metric ``name`` with its positional inputs taken from ``inputs`` and ``options`` as keywords.

    Extra entries of ``inputs`` are ignored, so one mapping (``a``, ``b``, ``logits``, ``y``, ``model``, ``x``...)
    can serve every metric; a missing one raises ``ValueError``. Returns the metric's result (``(N,)``, or a dict
    of them for ``corruption_accuracy``).
    """
    needed = metric_inputs(name)
    missing = [i for i in needed if i not in inputs]
    if missing:
        raise ValueError(f"inputs: metric {name!r} expected inputs {needed}, missing {missing}")
    return METRICS.get(name)(*(inputs[i] for i in needed), **options)


for _kind, _inputs, _needs in (
    ("pair", ("a", "b"), "attack"),
    ("map", ("a",), None),
    ("values", ("u", "v"), None),
    ("logits", ("logits", "y"), None),
    ("model", ("model", "x", "y"), None),
    ("model_pair", ("model", "x", "x_adv"), "attack"),
    ("boxes", ("pred_boxes", "gt_boxes"), "boxes"),
    ("boxes_top1", ("pred_boxes", "gt_boxes", "logits", "y"), "boxes"),
):
    add_metric_kind(_kind, _inputs, _needs)

# The metrics on maps, values, logits and boxes also take numpy arrays and a single example (``.inputs``); these
# versions are the package's names and the registered ones (tensor batches reach the metric itself unchanged).
topk_intersection = accepts_arrays(topk_intersection, "pair")
kendall_tau = accepts_arrays(kendall_tau, "pair")
spearman = accepts_arrays(spearman, "pair")
cosine = accepts_arrays(cosine, "pair")
pearson = accepts_arrays(pearson, "pair")
ssim = accepts_arrays(ssim, "spatial_pair")
gini = accepts_arrays(gini, "map")
goodman_kruskal_gamma = accepts_arrays(goodman_kruskal_gamma, "values")
accuracy = accepts_arrays(accuracy, "logits")
box_iou = accepts_arrays(box_iou, "boxes")
gt_known_loc = accepts_arrays(gt_known_loc, "boxes")
top1_loc = accepts_arrays(top1_loc, "boxes_top1")

for _name, _fn, _kind in (
    ("topk_intersection", topk_intersection, "pair"),
    ("kendall_tau", kendall_tau, "pair"),
    ("spearman", spearman, "pair"),
    ("cosine", cosine, "pair"),
    ("pearson", pearson, "pair"),
    ("ssim", ssim, "pair"),
    ("gini", gini, "map"),
    ("goodman_kruskal_gamma", goodman_kruskal_gamma, "values"),
    ("accuracy", accuracy, "logits"),
    ("corruption_accuracy", corruption_accuracy, "model"),
    ("ris", ris, "model"),
    ("ros", ros, "model"),
    ("rrs", rrs, "model"),
    ("image_gradient_alignment", image_gradient_alignment, "model"),
    ("activation_consistency", activation_consistency, "model_pair"),
    ("box_iou", box_iou, "boxes"),
    ("gt_known_loc", gt_known_loc, "boxes"),
    ("top1_loc", top1_loc, "boxes_top1"),
):
    register_metric(_name, _kind)(_fn)
del _kind, _inputs, _needs, _name, _fn

__all__ = [
    "METRICS",
    "METRIC_KINDS",
    "METRIC_KIND_INPUTS",
    "METRIC_KIND_NEEDS",
    "PerturbationCurve",
    "accuracy",
    "activation_consistency",
    "add_metric_kind",
    "attribution_spectral_norm",
    "box_iou",
    "boxes_from_maps",
    "call_metric",
    "corruption_accuracy",
    "cosine",
    "cosine_bound",
    "deletion",
    "euclidean_bound",
    "gini",
    "goodman_kruskal_gamma",
    "gt_known_loc",
    "image_gradient_alignment",
    "insertion",
    "kendall_tau",
    "linf_bound",
    "local_linearity_eta",
    "localization_heatmap",
    "metric_inputs",
    "metric_kind",
    "metric_needs",
    "metrics_of_kind",
    "modified_euclidean_bound",
    "noisy_linear_impute",
    "pearson",
    "register_metric",
    "relative_stability",
    "ris",
    "road",
    "ros",
    "rrs",
    "saliency_map",
    "spearman",
    "ssim",
    "top1_loc",
    "topk_intersection",
    "uniform_perturbations",
]
