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

Every random draw comes from a generator seeded by ``(seed, metric, batch)``. Per-example values are ``(B,)``
columns (NaN where a metric does not apply to an example); curves (ROAD, SSIM under noise) are ``(B, F)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .. import metrics
from ..attacks import corruptions
from ..attributions import get_attribution, integrated_gradients
from ..attributions.layer import last_feature_layer
from ..metrics import bounds, faithfulness
from .config import EvalConfig
from .seeding import derive_seed

# metrics of one example pair (clean map, IFIA-perturbed map)
PAIR_METRICS = ("spearman", "pearson", "cosine", "ssim")
SUITE_METRICS = (
    *PAIR_METRICS, "activation_consistency", "gini", "image_gradient_alignment", "ris", "ros", "rrs", "road",
    "deletion", "insertion", "euclidean_bound", "cosine_bound", "linf_bound", "ssim_noise", "corruption_accuracy",
    "gt_known_loc", "top1_loc",
)  # fmt: skip
NEEDS_IFIA = (*PAIR_METRICS, "activation_consistency")
NEEDS_BOXES = ("gt_known_loc", "top1_loc")


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
        """The evaluation's attribution ``(M, C, H, W)`` of ``x`` for the labels ``y``."""
        cfg = self.config.ifia
        if cfg.attribution in ("ig", "integrated_gradients"):
            return integrated_gradients(model, x, y, steps=cfg.ig_steps)
        return get_attribution(cfg.attribution)(model, x, y)

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


def _pair(name: str) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def run(batch: Batch) -> dict[str, torch.Tensor]:
        if batch.attacked is None or not len(batch.attacked):
            return {name: batch.scatter(torch.empty(0))}
        clean = batch.clean_maps()[batch.attacked]
        adv = batch.adv_maps()
        a, b = (metrics.saliency_map(clean), metrics.saliency_map(adv))
        if name == "ssim":
            shape = (len(batch.attacked), *batch.x.shape[2:])
            a, b = a.view(shape), b.view(shape)
        return {name: batch.scatter(metrics.METRICS.get(name)(a, b))}

    return run


def _activation_consistency(batch: Batch) -> dict[str, torch.Tensor]:
    if batch.attacked is None or not len(batch.attacked):
        return {"activation_consistency": batch.scatter(torch.empty(0))}
    x = batch.x[batch.attacked]
    return {"activation_consistency": batch.scatter(metrics.activation_consistency(batch.model, x, batch.x_adv))}


def _column(values: torch.Tensor) -> torch.Tensor:
    return values.detach().double().cpu()


def _stability(name: str) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def run(batch: Batch) -> dict[str, torch.Tensor]:
        s = batch.config.suite
        kw: dict[str, Any] = {"n_samples": s.stability_samples, "noise": s.stability_noise,
                              "generator": batch.generator(name)}  # fmt: skip
        if name == "rrs":
            kw["layer"] = last_feature_layer(batch.model, batch.x)
        fn = {"ris": metrics.ris, "ros": metrics.ros, "rrs": metrics.rrs}[name]
        return {name: _column(fn(batch.model, batch.x, batch.y, batch.explain, **kw))}

    return run


def _perturbation_curve(name: str) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def run(batch: Batch) -> dict[str, torch.Tensor]:
        maps = batch.clean_maps()
        if name == "road":
            res = faithfulness.road(batch.model, batch.x, batch.y, maps, fractions=batch.config.suite.road_fractions,
                                    generator=batch.generator(name))  # fmt: skip
        else:
            res = getattr(faithfulness, name)(batch.model, batch.x, batch.y, maps)
        return {name: _column(res.auc), f"{name}_curve": _column(res.curve)}

    return run


def _bound(name: str) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def run(batch: Batch) -> dict[str, torch.Tensor]:
        s, cfg = batch.config.suite, batch.config.ifia
        beta = cfg.beta if cfg.beta is not None else s.bound_beta
        kw: dict[str, Any] = {"attribution": s.bound_attribution, "beta": beta, "ig_steps": cfg.ig_steps}
        if name == "linf_bound":
            values = bounds.linf_bound(batch.model, batch.x, batch.y, cfg.eps, **kw)
        elif name == "cosine_bound":
            values = bounds.cosine_bound(batch.model, batch.x, batch.y, cfg.eps, generator=batch.generator(name), **kw)
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


def _corruptions(batch: Batch) -> dict[str, torch.Tensor]:
    severity = batch.config.suite.corruption_severity
    gen = batch.generator("corruption_accuracy")
    transforms = {name: (lambda x, n=name: corruptions.corrupt(x, n, severity, generator=gen))
                  for name in corruptions.CORRUPTIONS.names()}  # fmt: skip
    with torch.no_grad():
        acc = metrics.corruption_accuracy(batch.model, batch.x, batch.y, transforms)
    cols = {f"corruption_accuracy/{name}": _column(v) for name, v in acc.items()}
    cols["corruption_accuracy"] = torch.stack(list(cols.values()), dim=1).mean(1)
    return cols


def _localization(name: str) -> Callable[[Batch], dict[str, torch.Tensor]]:
    def run(batch: Batch) -> dict[str, torch.Tensor]:
        if batch.boxes is None:
            raise ValueError(f"{name}: expected a batch with bounding boxes, got none")
        pred = metrics.boxes_from_maps(batch.clean_maps())
        gt = batch.boxes.to(pred.device)
        if name == "gt_known_loc":
            return {name: _column(metrics.gt_known_loc(pred, gt))}
        with torch.inference_mode():
            logits = batch.model(batch.x)
        return {name: _column(metrics.top1_loc(pred, gt, logits, batch.y))}

    return run


def _alignment(batch: Batch) -> dict[str, torch.Tensor]:
    return {"image_gradient_alignment": _column(metrics.image_gradient_alignment(batch.model, batch.x, batch.y))}


def _gini(batch: Batch) -> dict[str, torch.Tensor]:
    return {"gini": _column(metrics.gini(batch.clean_maps()))}


RUNNERS: dict[str, Callable[[Batch], dict[str, torch.Tensor]]] = {
    **{name: _pair(name) for name in PAIR_METRICS},
    "activation_consistency": _activation_consistency,
    "gini": _gini,
    "image_gradient_alignment": _alignment,
    **{name: _stability(name) for name in ("ris", "ros", "rrs")},
    **{name: _perturbation_curve(name) for name in ("road", "deletion", "insertion")},
    **{name: _bound(name) for name in ("euclidean_bound", "cosine_bound", "linf_bound")},
    "ssim_noise": _ssim_noise,
    "corruption_accuracy": _corruptions,
    **{name: _localization(name) for name in NEEDS_BOXES},
}


def run_batch(batch: Batch, names: list[str]) -> dict[str, list[Any]]:
    """Columns of every metric in ``names`` for one batch, as JSON-ready lists (NaN stays NaN here)."""
    out: dict[str, list[Any]] = {}
    for name in names:
        for key, values in RUNNERS[name](batch).items():
            out[key] = values.tolist()
    return out


def _stats(values: torch.Tensor) -> dict[str, float | int | None]:
    finite = values[torch.isfinite(values)]
    out: dict[str, float | int | None] = {"count": int(finite.numel()), "mean": None, "std": None, "median": None,
                                          "q25": None, "q75": None}  # fmt: skip
    if finite.numel():
        q = torch.quantile(finite, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64))
        out.update(mean=float(finite.mean()), std=float(finite.std(unbiased=False)), median=float(q[1]),
                   q25=float(q[0]), q75=float(q[2]))  # fmt: skip
    return out


def summarize(columns: dict[str, list[Any]], config: EvalConfig, attribution: str,
              kendall: list[float] | None) -> tuple[dict[str, Any], dict[str, Any]]:  # fmt: skip
    """Summary statistics of every per-example column (count, mean, std, median, quartiles over the finite
    values) and the curves the report draws (``road``, ``ssim_noise``), from the merged columns."""
    summary: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for key, values in columns.items():
        t = torch.tensor([float("nan") if v is None else v for v in values], dtype=torch.float64)
        if key.endswith("_curve"):
            means = [float(c[torch.isfinite(c)].mean()) if torch.isfinite(c).any() else None for c in t.T]
            if key == "road_curve":
                curves["road"] = {"fractions": list(config.suite.road_fractions), "accuracy": {attribution: means}}
            elif key == "ssim_noise_curve":
                curves["ssim_noise"] = {"sigma": list(config.suite.ssim_sigmas), "ssim": {attribution: means}}
            else:
                curves[key[: -len("_curve")]] = {"mean": means}
        else:
            summary[key] = _stats(t)
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


