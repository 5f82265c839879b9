"""The report's figures, drawn from plain arrays: box plots, the accuracy vs. attributional-robustness
trade-off, curve families and saliency-map grids (from stored examples), each a :class:`matplotlib.figure.Figure`
rendered by the Agg canvas (:func:`png_bytes`) and as PDF (:func:`pdf_bytes`). Figures never enter pyplot's
figure registry, so nothing stays open after saving. Text is shown literally (no mathtext); legends sit outside
the panels."""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..examples import SaliencyExamples
from .inputs import num

_DPI = 100


def _label(text: str) -> str:
    """Text shown literally by matplotlib (no mathtext; a leading underscore would hide a legend entry)."""
    text = text.replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def _colour(i: int) -> Any:
    return matplotlib.colormaps["tab10"](i % 10)


def _colours(order: Sequence[str] | None) -> Callable[[str], Any]:
    """Colour of a model: its position in ``order`` (the same colour in every figure), else first come first."""
    seen = {name: i for i, name in enumerate(order or ())}
    return lambda name: _colour(seen.setdefault(name, len(seen)))


def box_plots(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    *,
    title: str | None = None,
    colour_order: Sequence[str] | None = None,
) -> Figure:
    """One box plot panel per entry of ``panels`` (panel title -> model -> per-example values ``(M,)``); a
    model's colour is its position in ``colour_order`` (default: order of appearance)."""
    colour = _colours(colour_order)
    fig = Figure(figsize=(max(4.0, 1.2 + 1.1 * max(len(p) for p in panels.values())) * len(panels), 3.6))
    for ax, (panel, per_model) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        names = list(per_model)
        data = [np.asarray(per_model[n], dtype=np.float64) for n in names]
        data = [d[np.isfinite(d)] for d in data]
        parts = ax.boxplot(data, patch_artist=True, showmeans=True, medianprops={"color": "black"})
        ax.set_xticks(range(1, len(names) + 1), [_label(n) for n in names])
        for name, box, median in zip(names, parts["boxes"], parts["medians"], strict=True):
            box.set_facecolor(colour(name))
            box.set_alpha(0.5)
            median.set_gid("median")
        ax.set_title(_label(panel))
        ax.set_ylim(-1.05 if any(d.size and d.min() < 0 for d in data) else -0.02, 1.05)
        ax.grid(axis="y", alpha=0.3)
        ax.tick_params(axis="x", labelrotation=20)
    if title:
        fig.suptitle(_label(title))
    fig.tight_layout()
    return fig


def _outside_legend(fig: Figure, handles: Sequence[Line2D]) -> None:
    """One legend for the whole figure, outside the panels on the right (it never covers a point or a line)."""
    fig.legend(handles=list(handles), loc="outside right upper", fontsize=8, frameon=False)


def _key(label: str, colour: Any, marker: str = "s", **line: Any) -> Line2D:
    return Line2D([], [], color=colour, marker=marker, label=_label(label), **({"linestyle": ""} | line))


def tradeoff_plot(
    names: Sequence[str],
    natural_acc: Sequence[float | None],
    pgd_acc: Sequence[float | None],
    robustness: Mapping[str, Sequence[float | None]],
) -> Figure:
    """Accuracy vs. attributional robustness: one panel per entry of ``robustness`` (metric name -> value per
    model); circles are natural accuracy, triangles PGD accuracy; None values are not drawn. The legend (one
    colour per model, one marker per accuracy) sits outside the panels."""
    fig = Figure(figsize=(4.6 * len(robustness) + 2.4, 3.8), layout="constrained")
    axes = fig.subplots(1, len(robustness), squeeze=False)[0]
    drawn: dict[int, str] = {}
    for ax, (metric, xs) in zip(axes, robustness.items(), strict=True):
        for i, name in enumerate(names):
            x = num(xs[i])
            if x is None:
                continue
            for acc, marker in ((natural_acc[i], "o"), (pgd_acc[i], "^")):
                if num(acc) is not None:
                    ax.scatter([x], [acc], color=_colour(i), marker=marker, s=60)
                    drawn[i] = name
        values = [v for v in map(num, xs) if v is not None]
        ax.set_xlim(min(0.0, *values) - 0.02, 1.02)
        ax.set_xlabel(_label(metric))
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
    keys = [_key(name, _colour(i)) for i, name in sorted(drawn.items())]
    keys += [_key("natural accuracy", "0.4", "o"), _key("PGD accuracy", "0.4", "^")]
    _outside_legend(fig, keys)
    return fig


def curve_plots(
    panels: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]],
    *,
    xlabel: str,
    ylabel: str | None = None,
    title: str | None = None,
    colour_order: Sequence[str] | None = None,
) -> Figure:
    """Line plots: one panel per entry of ``panels`` (panel title -> model -> ``(x (L,), y (L,))``); the y label
    is ``ylabel`` or the panel title; a model's colour is its position in ``colour_order`` (default: order of
    appearance), the same in every panel; one legend outside the panels."""
    fig = Figure(figsize=(4.2 * len(panels) + 2.0, 3.6), layout="constrained")
    colour = _colours(colour_order)
    keys: dict[str, Line2D] = {}
    for ax, (panel, curves) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        for name, (x, y) in curves.items():
            ax.plot(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), marker="o", ms=3,
                    color=colour(name))  # fmt: skip
            keys.setdefault(name, _key(name, colour(name), "o", ms=3, linestyle="-"))
        ax.set_title(_label(panel))
        ax.set_xlabel(_label(xlabel))
        ax.set_ylabel(_label(ylabel or panel))
        ax.grid(alpha=0.3)
    _outside_legend(fig, list(keys.values()))
    if title:
        fig.suptitle(_label(title))
    return fig


def _show_image(ax: Any, img: np.ndarray) -> None:
    if img.shape[0] == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    else:
        ax.imshow(img.mean(0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def _row_label(examples: SaliencyExamples, r: int) -> str:
    """``#<dataset index>: <class name>`` (``(label <label>)`` added when the name is not the label itself), or
    ``#<dataset index>: label <label>`` when no class name is known."""
    label = int(examples.labels[r])
    name = None if examples.classes is None else str(examples.classes[r])
    what = f"label {label}" if not name else name if name == str(label) else f"{name} (label {label})"
    return f"#{int(examples.indices[r])}: {what}"


def saliency_grid(examples: SaliencyExamples, *, title: str | None = None) -> Figure:
    """Rows of clean image | attribution map | IFIA-perturbed image | perturbed map, with the top-k intersection and
    Kendall tau between the two maps under each row (maps are shown each scaled to its own maximum); each row is
    labelled with the dataset index and the class name (the label when no name is known)."""
    n = len(examples.indices)
    fig = Figure(figsize=(7.2, 1.95 * n + 0.6))
    axes = fig.subplots(n, 4, squeeze=False)
    heads = ("image", f"{examples.attribution} map", "IFIA-perturbed", "perturbed map")
    for r in range(n):
        maps = (examples.maps[r], examples.adv_maps[r])
        _show_image(axes[r, 0], examples.images[r])
        _show_image(axes[r, 2], examples.adv_images[r])
        for ax, m in zip((axes[r, 1], axes[r, 3]), maps, strict=True):
            ax.imshow(m, cmap="inferno", vmin=0, vmax=float(m.max()) or 1.0, interpolation="nearest")
        for c, ax in enumerate(axes[r]):
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(_label(heads[c]), fontsize=9)
        axes[r, 0].set_ylabel(_label(_row_label(examples, r)), fontsize=8)
        if examples.valid[r]:
            text = f"top-{examples.k}: {100 * examples.topk[r]:.1f}%\nKendall: {examples.kendall[r]:.4f}"
        else:
            text = "no valid perturbation"
        axes[r, 3].set_xlabel(text, fontsize=8)
    if title:
        fig.suptitle(_label(title), fontsize=10)
    fig.tight_layout()
    return fig


def png_bytes(fig: Figure) -> bytes:
    """The figure rendered by the Agg canvas as PNG bytes."""
    FigureCanvasAgg(fig)  # attaches the Agg canvas whatever pyplot's backend is
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def pdf_bytes(fig: Figure) -> bytes:
    """The figure as PDF bytes (vector; no creation date, so equal figures give equal files)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="pdf", dpi=_DPI, metadata={"CreationDate": None})
    return buf.getvalue()
