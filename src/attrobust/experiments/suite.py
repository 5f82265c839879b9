"""The evaluation suite: every metric of :mod:`attrobust.metrics`, paired with the attribution and the attacks
of an evaluation (``attrobust evaluate --metrics NAME[,NAME...]|all``).

Metrics are pure functions; this module decides what they are applied to, batch by batch, so the results merge
across processes like the rest of :func:`~attrobust.experiments.evaluate.evaluate`:

- the *attribution* is the one IFIA attacks (``EvalConfig.ifia.attribution`` with ``ig_steps`` points, on the
  original model), computed for the clean batch and for IFIA's selected perturbation;
- similarity metrics (``spearman``, ``pearson``, ``cosine``, ``ssim``) and ``activation_consistency`` compare
  each attacked example with its IFIA perturbation (like top-k and Kendall; NaN for examples not attacked);
- ``gini``, ``image_gradient_alignment``, ``ris``, ``ros``, ``rrs`` (representation of the last feature-map
  layer), ``road``, ``deletion``, ``insertion``, the bounds and ``ssim_noise`` use the clean examples;
- ``corruption_accuracy`` classifies every corruption of :mod:`attrobust.attacks.corruptions` at one severity;
- ``gt_known_loc`` and ``top1_loc`` need a dataset with boxes (CUB); elsewhere they are left out with a note.

Dispatch: a name registered in :data:`attrobust.metrics.METRICS` runs through :func:`attrobust.metrics.call_metric`
with the inputs of its kind (:data:`KIND_INPUTS`: one batch-level mapping per kind) and the options the suite
sets for it (:data:`OPTIONS`); what it needs (an attack's perturbation, boxes) is its kind's need in the
registry. The other names are measures the suite composes from metric functions (:data:`COMPOSITES`: the
faithfulness curves, the bounds, SSIM under noise). :data:`SUITE_METRICS` is the menu, in the order the
columns run and are stored.

Every random draw comes from a generator seeded by ``(seed, metric, batch)``. Per-example values are ``(B,)``
columns (NaN where a metric does not apply to an example); curves (ROAD, SSIM under noise) are ``(B, F)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import metrics
from ..attacks import corruptions
from ..attributions import explainer
from ..attributions.layer import last_feature_layer
from ..metrics import bounds, faithfulness
from .config import EvalConfig
from .seeding import derive_seed
from .summaries import finite_summary

# the menu of ``evaluate --metrics``, in the order the columns run and are stored (registered metrics and
# COMPOSITES); top-k intersection and Kendall are IFIA's own columns, accuracy the natural accuracy, gamma a
# summary of two columns and box_iou a building block of the localisation metrics, so the suite leaves them out
SUITE_METRICS = (
    "spearman", "pearson", "cosine", "ssim", "activation_consistency", "gini", "image_gradient_alignment", "ris",
    "ros", "rrs", "road", "deletion", "insertion", "euclidean_bound", "l2_bound", "modified_bound", "cosine_bound",
    "linf_bound", "linf_cosine_bound", "ssim_noise", "corruption_accuracy", "gt_known_loc", "top1_loc",
)  # fmt: skip
# the upper bounds of paper 004 (appendix A-B), each at the eps of ifia.eps:
# euclidean_bound  T_e = sqrt(d) xi_max eps, the l_inf ball (Corollary 1)
# l2_bound         T_e = xi_max eps, the l2 ball (Theorem 1; the T_e of Tables 7 and 9)
# modified_bound   T'_e = c xi_max eps, the l2 ball (Eq. 39)
# cosine_bound     T_c from the l2 T_e (Corollary 2), as a cosine distance 1 - cos
# linf_bound       T_e = eps sqrt(sum_ij |P_ij|), the l_inf ball (Theorem 2; the T_e of Table 8)
# linf_cosine_bound  T_c from that l_inf T_e (Corollary 2; the T_c of Table 8)
BOUND_METRICS = ("euclidean_bound", "l2_bound", "modified_bound", "cosine_bound", "linf_bound", "linf_cosine_bound")
COMPOSITE_METRICS = ("road", "deletion", "insertion", *BOUND_METRICS, "ssim_noise")
# the l2 bounds start their power iteration from the same seeded vector (the stream cosine_bound has always
# drawn from), so the T_e, T'_e and T_c of one example come from the same xi_max
_L2_STREAM = "cosine_bound"


def needs(name: str) -> str | None:
    """What the suite metric ``name`` needs besides the clean batch: ``"attack"`` (IFIA's perturbations),
    ``"boxes"`` or None; a registered metric's is its kind's (``metrics.metric_needs``)."""
    return None if name in COMPOSITE_METRICS else metrics.metric_needs(name)


NEEDS_IFIA = tuple(n for n in SUITE_METRICS if needs(n) == "attack")
NEEDS_BOXES = tuple(n for n in SUITE_METRICS if needs(n) == "boxes")
# metrics of one example pair (clean map, IFIA-perturbed map)
PAIR_METRICS = tuple(n for n in NEEDS_IFIA if metrics.metric_kind(n) == "pair")


def check_names(names: list[str]) -> None:
    """Raise ``ValueError`` unless ``names`` is ``["all"]`` or a list of suite metric names."""
    if names == ["all"]:
        return
    unknown = [n for n in names if n not in SUITE_METRICS]
    if unknown:
        valid = ", ".join(SUITE_METRICS)
        raise ValueError(f"metrics: unknown {', '.join(unknown)}; expected 'all' or names from: {valid}")


def resolve(names: list[str], config: EvalConfig, has_boxes: bool) -> tuple[list[str], list[str]]:
    """The metrics to run for ``names`` (``["all"]`` expands to every metric that applies) and notes on what
    was left out; an unknown or inapplicable metric asked for by name raises ``ValueError``."""
    if names == ["all"]:
        chosen, notes = [], []
        for name in SUITE_METRICS:
            if name in NEEDS_BOXES and not has_boxes:
                notes.append(f"{name}: the dataset has no bounding boxes")
            elif name in NEEDS_IFIA and config.skip_ifia:
                notes.append(f"{name}: IFIA was not run")
            else:
                chosen.append(name)
        return chosen, notes
    check_names(names)
    for name in names:
        if name in NEEDS_BOXES and not has_boxes:
            raise ValueError(f"metrics: {name} needs a dataset with bounding boxes (e.g. cub), got one without")
        if name in NEEDS_IFIA and config.skip_ifia:
            raise ValueError(f"metrics: {name} compares clean and IFIA-perturbed maps, but IFIA is skipped")
    return list(dict.fromkeys(names)), []


@dataclass
class Batch:
    """One evaluation batch: ``x`` float ``(B, C, H, W)`` in [0, 1], ``y`` int64 ``(B,)``, ``correct`` bool
    ``(B,)``, the IFIA result for the positions ``attacked`` (int64 ``(A,)``) and optional ``boxes (B, 4)``."""

    model: nn.Module
    index: int
    x: torch.Tensor
    y: torch.Tensor
    correct: torch.Tensor
    config: EvalConfig
    attacked: torch.Tensor | None = None
    x_adv: torch.Tensor | None = None
    boxes: torch.Tensor | None = None
    _cache: dict[str, torch.Tensor] = field(default_factory=dict)

    def generator(self, name: str) -> torch.Generator:
        return torch.Generator(device=self.x.device).manual_seed(derive_seed(self.config.seed, f"{name}/{self.index}"))

    def explain(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The evaluation's attribution ``(M, C, H, W)`` of ``x`` for the labels ``y``; a random method
        (SmoothGrad) draws from the batch's ``explain`` stream, the same draws for every call of the batch (the
        clean and the compared maps share their noise), so its numbers are a function of the protocol."""
        cfg = self.config.ifia
        return explainer(cfg.attribution, ig_steps=cfg.ig_steps, generator=self.generator("explain"))(model, x, y)

    def clean_maps(self) -> torch.Tensor:
        if "clean" not in self._cache:
            self._cache["clean"] = self.explain(self.model, self.x, self.y)
        return self._cache["clean"]

    def adv_maps(self) -> torch.Tensor:
        if "adv" not in self._cache:
            if self.x_adv is None or self.attacked is None:
                raise ValueError("adv_maps: expected a batch with IFIA results (x_adv, attacked), got none")
            self._cache["adv"] = self.explain(self.model, self.x_adv, self.y[self.attacked])
        return self._cache["adv"]

    def scatter(self, values: torch.Tensor) -> torch.Tensor:
        """Per-attacked values ``(A,)`` placed in a ``(B,)`` column, NaN elsewhere."""
        out = torch.full((len(self.y),), float("nan"), dtype=torch.float64)
        if self.attacked is not None and len(self.attacked):
            out[self.attacked.cpu()] = values.detach().double().cpu()
        return out


def _column(values: torch.Tensor) -> torch.Tensor:
    return values.detach().double().cpu()


# --------------------------------------------------------------------------------------------------------------
# registered metrics: the inputs of each kind, the options the suite sets


def _pair_inputs(batch: Batch) -> dict[str, Any]:
    """Saliency maps of each attacked example and of its IFIA perturbation as one-channel images
    ``(A, 1, H, W)``: the ranking metrics reduce them to ``(A, H*W)`` unchanged, SSIM compares them as images."""
    shape = (len(batch.attacked), 1, *batch.x.shape[2:])
    clean, adv = batch.clean_maps()[batch.attacked], batch.adv_maps()
    return {"a": metrics.saliency_map(clean).view(shape), "b": metrics.saliency_map(adv).view(shape)}


def _boxes_inputs(batch: Batch) -> dict[str, Any]:
    if batch.boxes is None:
        raise ValueError("localisation: expected a batch with bounding boxes, got none")
    pred = metrics.boxes_from_maps(batch.clean_maps())
    return {"pred_boxes": pred, "gt_boxes": batch.boxes.to(pred.device)}


def _boxes_top1_inputs(batch: Batch) -> dict[str, Any]:
    with torch.inference_mode():
        logits = batch.model(batch.x)
    return {**_boxes_inputs(batch), "logits": logits, "y": batch.y}


KIND_INPUTS: dict[str, Callable[[Batch], Mapping[str, Any]]] = {
    "pair": _pair_inputs,
    "map": lambda batch: {"a": batch.clean_maps()},
    "model": lambda batch: {"model": batch.model, "x": batch.x, "y": batch.y},
    "model_pair": lambda batch: {"model": batch.model, "x": batch.x[batch.attacked], "x_adv": batch.x_adv},
    "boxes": _boxes_inputs,
    "boxes_top1": _boxes_top1_inputs,
}


def _stability_options(name: str) -> Callable[[Batch], dict[str, Any]]:
    def options(batch: Batch) -> dict[str, Any]:
        s = batch.config.suite
        kw: dict[str, Any] = {"explain": batch.explain, "n_samples": s.stability_samples, "noise": s.stability_noise,
                              "generator": batch.generator(name)}  # fmt: skip
        if name == "rrs":
            kw["layer"] = last_feature_layer(batch.model, batch.x)
        return kw

    return options


def _corruption_options(batch: Batch) -> dict[str, Any]:
    severity = batch.config.suite.corruption_severity
    gen = batch.generator("corruption_accuracy")
    return {"transforms": {name: (lambda x, n=name: corruptions.corrupt(x, n, severity, generator=gen))
                           for name in corruptions.CORRUPTIONS.names()}}  # fmt: skip


OPTIONS: dict[str, Callable[[Batch], dict[str, Any]]] = {
    **{name: _stability_options(name) for name in ("ris", "ros", "rrs")},
    "corruption_accuracy": _corruption_options,
}


def run_metric(batch: Batch, name: str) -> dict[str, torch.Tensor]:
    """The ``(B,)`` column(s) of the registered metric ``name`` on one batch: NaN for the examples an
    attack-pair metric does not apply to; a metric returning a dict of columns (``corruption_accuracy``) gives
    ``name/<key>`` columns and their mean as ``name``."""
    attack_pair = metrics.metric_needs(name) == "attack"
    if attack_pair and (batch.attacked is None or not len(batch.attacked)):
        return {name: batch.scatter(torch.empty(0))}
    inputs = KIND_INPUTS[metrics.metric_kind(name)](batch)
    value = metrics.call_metric(name, inputs, **(OPTIONS[name](batch) if name in OPTIONS else {}))
    if isinstance(value, dict):
        cols = {f"{name}/{key}": _column(v) for key, v in value.items()}
        cols[name] = torch.stack(list(cols.values()), dim=1).mean(1)
        return cols
    return {name: batch.scatter(value) if attack_pair else _column(value)}


# --------------------------------------------------------------------------------------------------------------
# composite measures: curves, bounds, SSIM under noise


def _perturbation_curve(name: str) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def run(batch: Batch) -> dict[str, torch.Tensor]:
        maps = batch.clean_maps()
        if name == "road":
            suite = batch.config.suite
            res = faithfulness.road(batch.model, batch.x, batch.y, maps, fractions=suite.road_fractions,
                                    output=suite.road_output, generator=batch.generator(name))  # fmt: skip
        else:
            res = getattr(faithfulness, name)(batch.model, batch.x, batch.y, maps,
                                              fractions=faithfulness.CURVE_FRACTIONS)  # what summarize records
        return {name: _column(res.auc), f"{name}_curve": _column(res.curve)}

    return run


def _bound(name: str) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def run(batch: Batch) -> dict[str, torch.Tensor]:
        s, cfg = batch.config.suite, batch.config.ifia
        beta = cfg.beta if cfg.beta is not None else s.bound_beta
        kw: dict[str, Any] = {"attribution": s.bound_attribution, "beta": beta, "ig_steps": cfg.ig_steps}
        if name == "linf_bound":
            values = bounds.linf_bound(batch.model, batch.x, batch.y, cfg.eps, **kw)
        elif name == "linf_cosine_bound":
            values = bounds.cosine_bound(batch.model, batch.x, batch.y, cfg.eps, bound="linf", **kw)
        elif name == "cosine_bound":
            values = bounds.cosine_bound(batch.model, batch.x, batch.y, cfg.eps, generator=batch.generator(name), **kw)
        elif name == "l2_bound":
            values = bounds.euclidean_bound(batch.model, batch.x, batch.y, cfg.eps, norm="l2",
                                            generator=batch.generator(_L2_STREAM), **kw)  # fmt: skip
        elif name == "modified_bound":
            values = bounds.modified_euclidean_bound(batch.model, batch.x, batch.y, cfg.eps,
                                                     generator=batch.generator(_L2_STREAM), **kw).bound  # fmt: skip
        else:
            values = bounds.euclidean_bound(batch.model, batch.x, batch.y, cfg.eps, norm="linf",
                                            generator=batch.generator(name), **kw)  # fmt: skip
        return {name: _column(values)}

    return run


def _ssim_noise(batch: Batch) -> dict[str, torch.Tensor]:
    clean = metrics.saliency_map(batch.clean_maps()).view(len(batch.y), *batch.x.shape[2:])
    gen = batch.generator("ssim_noise")
    cols = []
    for sigma in batch.config.suite.ssim_sigmas:
        noise = torch.randn(batch.x.shape, generator=gen, device=batch.x.device, dtype=batch.x.dtype)
        noisy = (batch.x + sigma * noise).clamp(0.0, 1.0)
        maps = metrics.saliency_map(batch.explain(batch.model, noisy, batch.y)).view_as(clean)
        cols.append(metrics.ssim(clean, maps))
    return {"ssim_noise_curve": _column(torch.stack(cols, dim=1))}


COMPOSITES: dict[str, Callable[[Batch], dict[str, torch.Tensor]]] = {
    **{name: _perturbation_curve(name) for name in ("road", "deletion", "insertion")},
    **{name: _bound(name) for name in BOUND_METRICS},
    "ssim_noise": _ssim_noise,
}


def run_batch(batch: Batch, names: list[str]) -> dict[str, list[Any]]:
    """Columns of every metric in ``names`` for one batch, as JSON-ready lists (NaN stays NaN here)."""
    out: dict[str, list[Any]] = {}
    for name in names:
        columns = COMPOSITES[name](batch) if name in COMPOSITES else run_metric(batch, name)
        for key, values in columns.items():
            out[key] = values.tolist()
    return out


def summarize(columns: dict[str, list[Any]], config: EvalConfig, attribution: str,
              kendall: list[float] | None) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Summary statistics of every per-example column (count, mean, std, median, quartiles over the finite
    values) and the curves the report draws (``road`` or ``road_probability``, ``deletion``, ``insertion``,
    ``ssim_noise``), from the merged columns."""
    summary: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for key, values in columns.items():
        t = torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float64)
        if key.endswith("_curve"):
            means = [float(c[torch.isfinite(c)].mean()) if torch.isfinite(c).any() else None for c in t.T]
            if key == "road_curve":  # the accuracy curve under "road", the probability's under "road_probability"
                output = config.suite.road_output
                block = {"fractions": list(config.suite.road_fractions), output: {attribution: means}}
                curves["road" if output == "accuracy" else "road_probability"] = block
            elif key == "ssim_noise_curve":
                curves["ssim_noise"] = {"sigma": list(config.suite.ssim_sigmas), "ssim": {attribution: means}}
            elif key in ("deletion_curve", "insertion_curve"):  # the probability of the label, at fixed fractions
                fractions = list(faithfulness.CURVE_FRACTIONS)
                curves[key[: -len("_curve")]] = {"fractions": fractions, "probability": {attribution: means}}
            else:
                curves[key[: -len("_curve")]] = {"mean": means}
        else:
            summary[key] = finite_summary(t)
    if kendall is not None:
        ken = torch.tensor(kendall, dtype=torch.float64)
        for other in ("cosine", "pearson"):
            if other in columns:
                vals = torch.tensor([float("nan") if v is None else v for v in columns[other]], dtype=torch.float64)
                vals = vals[torch.isfinite(vals)]
                if len(vals) == len(ken) and len(ken) > 1:
                    gamma = metrics.goodman_kruskal_gamma(ken[None], vals[None])
                    summary[f"gamma_kendall_{other}"] = float(gamma[0])
    return summary, curves


