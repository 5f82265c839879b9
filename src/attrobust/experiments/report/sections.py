"""The dispatcher from what the results contain to figures: box plots, the trade-off plot, the curve families of
:data:`CURVES` and the saliency-map grids of the stored examples. A section whose data are absent is left out and
a section whose data are malformed is left out with a note, never an exception."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from .. import examples as examples_lib
from .figures import box_plots, curve_plots, pdf_bytes, png_bytes, saliency_grid, tradeoff_plot
from .inputs import floats, num, per_example_similarities
from .page import Section


@dataclass(frozen=True)
class CurveSpec:
    """A family of curves read from ``results[key]`` of every model that has it.

    ``results[key][x]`` is the x column ``(L,)``. The panels are either the fixed ``panels`` (pairs
    ``(column, panel title)``; a model lacking a column is left out of that panel) or, with ``series``, the
    entries of ``results[key][series]``: a mapping panel title -> y column ``(L,)`` (e.g. one per attribution
    method), or a single y column drawn as one panel titled ``ylabel``.
    """

    key: str
    title: str
    x: str
    xlabel: str
    ylabel: str | None = None
    panels: tuple[tuple[str, str], ...] = ()
    series: str | None = None


CURVES: tuple[CurveSpec, ...] = (
    CurveSpec("eps_sweep", "Attributional robustness vs. attack budget", x="eps", xlabel="eps (l_inf, pixels)",
              panels=(("topk", "top-k intersection"), ("kendall", "Kendall tau"), ("natural_acc", "natural accuracy"),
                      ("pgd_acc", "PGD accuracy"))),
    CurveSpec("road", "ROAD: accuracy after removing the most relevant pixels", x="fractions",
              xlabel="fraction of pixels removed", ylabel="accuracy", series="accuracy"),
    CurveSpec("road_probability", "ROAD: probability of the label after removing the most relevant pixels",
              x="fractions", xlabel="fraction of pixels removed", ylabel="probability of the label",
              series="probability"),
    CurveSpec("deletion", "Deletion: probability of the label as the most relevant pixels turn black",
              x="fractions", xlabel="fraction of pixels deleted", ylabel="probability of the label",
              series="probability"),
    CurveSpec("insertion", "Insertion: probability of the label as the most relevant pixels enter a blurred copy",
              x="fractions", xlabel="fraction of pixels inserted", ylabel="probability of the label",
              series="probability"),
    CurveSpec("ssim_noise", "SSIM of saliency maps under input noise", x="sigma", xlabel="noise std",
              ylabel="SSIM", series="ssim"),
)  # fmt: skip


@dataclass
class _Collected:
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, title: str, slug: str, fig: Figure, caption: str = "") -> None:
        self.sections.append(Section(title, slug, png_bytes(fig), caption, pdf_bytes(fig)))


def _curve_panels(
    spec: CurveSpec, named: Mapping[str, Mapping[str, Any]], notes: list[str]
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, res in named.items():
        block = res.get(spec.key)
        if block is None:
            continue
        x = floats(block.get(spec.x)) if isinstance(block, Mapping) else None
        if x is None or not len(x):
            notes.append(f"{spec.key} of {name}: expected a mapping with a numeric list {spec.x!r}; left out")
            continue
        if spec.series is not None:
            ys = block.get(spec.series)
            columns = list(ys.items()) if isinstance(ys, Mapping) else [(spec.ylabel or spec.series, ys)]
        else:
            columns = [(title, block.get(col)) for col, title in spec.panels if col in block]
        for panel, values in columns:
            y = floats(values)
            if y is None or len(y) != len(x):
                notes.append(f"{spec.key} of {name}: {panel!s} is not a numeric list as long as {spec.x!r}; left out")
                continue
            panels.setdefault(str(panel), {})[name] = (x, y)
    return panels


def build_figures(named: Mapping[str, Mapping[str, Any]]) -> tuple[list[Section], list[str]]:
    """The figures the results support (box plots, trade-off, :data:`CURVES`) and notes on what was left out."""
    out = _Collected()
    sims = {name: per_example_similarities(res) for name, res in named.items()}
    for name, res in named.items():
        pe = res.get("per_example")
        if sims[name] is None and isinstance(pe, dict) and pe.get("ifia") is not None:
            out.notes.append(f"per-example IFIA values of {name} are malformed; left out of the box plots")
    have = {n: s for n, s in sims.items() if s is not None and len(s["topk"])}
    if have:
        panels = {
            "top-k intersection": {n: s["topk"] for n, s in have.items()},
            "Kendall tau": {n: s["kendall"] for n, s in have.items()},
        }
        fig = box_plots(panels, colour_order=list(named))
        out.add("Per-example attributional robustness under IFIA", "boxplots", fig,
                "Box plots of the per-example top-k intersection and Kendall tau between clean and perturbed "
                "maps (box: quartiles, line: median, triangle: mean; no valid perturbation counts as 1).")  # fmt: skip
    else:
        out.notes.append("no per-example IFIA values: box plots left out")

    names = list(named)
    s = [named[n]["summary"] for n in names]
    rob = {
        label: [num(x.get(key)) for x in s] for key, label in (("topk", "top-k intersection"), ("kendall", "Kendall"))
    }
    rob = {k: v for k, v in rob.items() if any(x is not None for x in v)}
    nat, pgd = [num(x.get("natural_acc")) for x in s], [num(x.get("pgd_acc")) for x in s]
    has_point = any(
        any(r[i] is not None for r in rob.values()) and (nat[i] is not None or pgd[i] is not None)
        for i in range(len(names))
    )
    if rob and has_point:
        out.add("Accuracy vs. attributional robustness", "tradeoff", tradeoff_plot(names, nat, pgd, rob),
                "Natural accuracy (circles) and PGD accuracy (triangles) against the mean top-k intersection and "
                "Kendall tau under IFIA.")  # fmt: skip
    else:
        out.notes.append("no model has both an accuracy and an IFIA similarity: trade-off plot left out")

    for spec in CURVES:
        panels = _curve_panels(spec, named, out.notes)
        if panels:
            fig = curve_plots(
                panels, xlabel=spec.xlabel, ylabel=spec.ylabel, title=spec.title, colour_order=list(named)
            )
            out.add(spec.title, spec.key, fig)
    return out.sections, out.notes


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_")[:40] or "model"


def build_saliency_sections(
    named: Mapping[str, Mapping[str, Any]], *, n_examples: int
) -> tuple[list[Section], list[str]]:
    """A saliency-map grid per result from the examples stored with it (:func:`attrobust.experiments.examples.load`;
    at most ``n_examples`` rows); a result without stored examples, or whose examples file is missing or is not
    the recorded one, gets a note instead."""
    out = _Collected()
    for i, (name, res) in enumerate(named.items()):
        try:
            ex = examples_lib.load(res)
        except (ValueError, OSError) as err:
            out.notes.append(f"saliency grid of {name} left out: {err}")
            continue
        if ex is None or not len(ex.indices):
            out.notes.append(f"no stored examples for {name}: saliency-map grid left out")
            continue
        ex = ex.head(n_examples)
        caption = (
            f"{name}: {ex.attribution} maps of correctly classified test samples before and after IFIA "
            f"(top-{ex.k} intersection and Kendall tau between the two maps)."
        )
        out.add(f"Saliency maps under IFIA: {name}", f"saliency_{i}_{_slug(name)}", saliency_grid(ex, title=name),
                caption)  # fmt: skip
    return out.sections, out.notes
