"""Reports of evaluation results: one self-contained HTML file and a Markdown summary.

:func:`write_report` reads the JSON results written by :func:`attrobust.experiments.evaluate.evaluate` (or the
dicts it returns) and writes into ``out_dir``:

- ``report.html``: the papers' table (natural acc, PGD acc, top-k, Kendall, no-valid; with ``published`` numbers:
  ours | paper | difference; one table per evaluation protocol, each under the line stating it), IFIA statistics,
  figures and saliency-map grids, every figure embedded as a ``data:image/png;base64`` URI. The page has no script
  and no external resource (a Content-Security-Policy meta tag forbids loading any); every piece of text is
  HTML-escaped; the configurations and run metadata sit in a collapsible ``<details>``.
- ``report.md``: the same tables, with relative links to the figures, which are written beside it as PNG files
  (``report_<figure>.png``).

Figures are drawn only from what the results contain; a section whose data are absent is left out and a
section whose data are malformed is left out with a note, never an exception:

- box plots of the per-example top-k intersection and Kendall tau (``per_example["ifia"]``; a sample without a
  valid perturbation counts as 1.0, as in the table);
- the accuracy vs. attributional-robustness trade-off (``summary``: natural / PGD accuracy vs. top-k, Kendall);
- curve families listed in :data:`CURVES`, each read from one top-level key of a result (see
  :class:`CurveSpec`): ``eps_sweep`` ``{"eps": [...], "topk": [...], "kendall": [...], "pgd_acc": [...]}``,
  ``road`` ``{"fractions": [...], "accuracy": {attribution: [...]}}`` and ``ssim_noise``
  ``{"sigma": [...], "ssim": {attribution: [...]}}``. A new family is one more :class:`CurveSpec`;
- saliency-map grids (the papers' qualitative figures) for the models given in ``models``: clean image, its
  attribution map, the IFIA-perturbed image and its map, with top-k and Kendall under each row. They are
  computed afresh (:func:`saliency_examples`) with the attribution, IFIA setting and dataset of the stored
  evaluation config.

Figures are :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas; they never enter pyplot's
figure registry, so nothing stays open after saving. Images follow the package contract: float
``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, logits ``(N, K)``.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import json
import math
import platform
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .. import attacks
from .. import models as models_lib
from .._checks import check_int
from ..attacks.attribution import _attribution_fn
from ..metrics import saliency_map
from . import protocol as protocol_lib
from .config import EvalConfig, from_dict
from .evaluate import TABLE_COLUMNS, _resolve_dataset, file_sha256, select_indices, table_row
from .train import derive_seed

ResultLike = str | Path | Mapping[str, Any]
NamedResult = tuple[str, ResultLike]

# Keys of a ``published`` entry: the summary keys of the table's numeric columns, as fractions (0.9912, not 99.12).
PUBLISHED_KEYS = {"natural_acc": "natural acc", "pgd_acc": "PGD acc", "topk": "top-k", "kendall": "Kendall"}
_PCT_COLUMNS = ("natural acc", "PGD acc")
_DPI = 100


# --------------------------------------------------------------------------------------------------------------
# results in


def _load_one(item: ResultLike, where: str) -> tuple[dict[str, Any], Path | None]:
    if isinstance(item, str | Path):
        path = Path(item)
        if not path.is_file():
            raise FileNotFoundError(f"{where}: results file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{where}: expected a JSON results file, got {path} ({err})") from None
    elif isinstance(item, Mapping):
        data, path = dict(item), None
    else:
        raise ValueError(f"{where}: expected a results path or dict, got {type(item).__name__}")
    if not isinstance(data, dict) or not isinstance(data.get("summary"), dict):
        raise ValueError(f"{where}: expected an evaluation result with a 'summary' mapping, got {str(data)[:80]!r}")
    return data, path


def _default_name(data: dict[str, Any], path: Path | None, i: int) -> str:
    if isinstance(data.get("name"), str) and data["name"]:
        return data["name"]
    source = path or (Path(data["path"]) if isinstance(data.get("path"), str) else None)
    if source is not None:
        return source.parent.name if source.name == "results.json" and source.parent.name else source.stem
    if isinstance(data.get("checkpoint"), str) and Path(data["checkpoint"]).parent.name:
        return Path(data["checkpoint"]).parent.name
    return f"model {i + 1}"


def load_results(
    results: Sequence[ResultLike | NamedResult] | Mapping[str, ResultLike],
) -> dict[str, dict[str, Any]]:
    """Named evaluation results ``{name: result dict}`` in the given order.

    ``results`` is a mapping ``name -> path or dict`` or a sequence of ``results.json`` paths, result dicts and
    ``(name, path or dict)`` pairs; an unnamed file is named after its run directory, an unnamed dict after its
    ``"name"`` key or its checkpoint's run directory; repeated names get `` (2)``, `` (3)`` ...
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for something that is not an evaluation
    result.
    """
    if isinstance(results, str | Path):
        raise ValueError(f"results: expected a list or mapping of results, got a single {type(results).__name__}")
    if isinstance(results, Mapping) and isinstance(results.get("summary"), dict):
        items: list[tuple[str | None, Any]] = [(None, results)]  # one result dict
    elif isinstance(results, Mapping):
        items = list(results.items())
    else:
        items = [r if isinstance(r, tuple) and len(r) == 2 and isinstance(r[0], str) else (None, r) for r in results]
    if not items:
        raise ValueError("results: expected at least one evaluation result, got none")
    named: dict[str, dict[str, Any]] = {}
    for i, (name, item) in enumerate(items):
        data, path = _load_one(item, f"results[{name!r}]" if name is not None else f"results[{i}]")
        base = str(name) if name is not None else _default_name(data, path, i)
        unique, n = base, 2
        while unique in named:
            unique, n = f"{base} ({n})", n + 1
        if path is not None:
            data.setdefault("path", str(path))
        named[unique] = data
    return named


def _num(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, strings, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _floats(values: Any) -> np.ndarray | None:
    """``float64 (L,)`` of a list of numbers (None -> NaN), or None when ``values`` is not such a list."""
    if not isinstance(values, list | tuple):
        return None
    if not all(v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values):
        return None
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def per_example_similarities(results: Mapping[str, Any]) -> dict[str, np.ndarray] | None:
    """Per-example IFIA ``{"topk": (M,), "kendall": (M,)}`` as counted in the table (no valid perturbation ->
    1.0), or None when the results hold no (well-formed) per-example IFIA columns."""
    cols = (results.get("per_example") or {}).get("ifia") if isinstance(results.get("per_example"), dict) else None
    if not isinstance(cols, dict):
        return None
    out = {key: _floats(cols.get(key)) for key in ("topk", "kendall")}
    if any(v is None for v in out.values()) or len(out["topk"]) != len(out["kendall"]):  # type: ignore[arg-type]
        return None
    valid = cols.get("valid")
    if valid is not None:
        if not isinstance(valid, list) or len(valid) != len(out["topk"]):  # type: ignore[arg-type]
            return None
        mask = np.array([bool(v) for v in valid])
        out = {key: np.where(mask, v, 1.0) for key, v in out.items()}  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------------------
# tables


def _diff(column: str, ours: float | None, paper: float | None) -> str:
    """``ours - paper``: percentage points for accuracies, plain for top-k / Kendall; ``-`` if either is missing."""
    if ours is None or paper is None:
        return "-"
    d = ours - paper
    return f"{100 * d:+.2f} pp" if column in _PCT_COLUMNS else f"{d:+.4f}"


def _check_published(published: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, float | None]]:
    if published is None:
        return {}
    if not isinstance(published, Mapping):
        raise ValueError(f"published: expected a mapping model -> {{metric: value}}, got {type(published).__name__}")
    out: dict[str, dict[str, float | None]] = {}
    for name, entry in published.items():
        if not isinstance(entry, Mapping):
            raise ValueError(f"published[{name!r}]: expected a mapping metric -> value, got {entry!r}")
        for key, value in entry.items():
            if key not in PUBLISHED_KEYS:
                raise ValueError(
                    f"published[{name!r}]: unknown metric {key!r}; expected one of {', '.join(PUBLISHED_KEYS)}"
                )
            if value is not None and _num(value) is None:
                raise ValueError(f"published[{name!r}][{key!r}]: expected a finite number or null, got {value!r}")
        out[str(name)] = {key: _num(entry.get(key)) for key in PUBLISHED_KEYS}
    return out


def results_table(
    named: Mapping[str, Mapping[str, Any]], published: Mapping[str, Mapping[str, Any]] | None = None
) -> tuple[list[str], list[list[str]]]:
    """The papers' table as ``(header, rows)`` of strings (cells formatted as :func:`evaluate.table_row`).

    Without ``published``: ``model | natural acc | PGD acc | top-k | Kendall | no-valid``. With it (a mapping
    model -> ``{natural_acc, pgd_acc, topk, kendall}`` as fractions, like the results' summary), each numeric
    column becomes three: ``X``, ``X (paper)``, ``X (diff)`` = ours - paper (accuracies in percentage points).
    Models only in ``published`` get a row of their own with ``-`` for ours.
    """
    pub = _check_published(published)
    numeric = [c for c in TABLE_COLUMNS if c not in ("model", "no-valid")]
    if not pub:
        return list(TABLE_COLUMNS), [[table_row(n, r)[c] for c in TABLE_COLUMNS] for n, r in named.items()]
    header = ["model"]
    for c in numeric:
        header += [c, f"{c} (paper)", f"{c} (diff)"]
    header.append("no-valid")
    key_of = {col: key for key, col in PUBLISHED_KEYS.items()}
    rows = []
    for name in [*named, *(n for n in pub if n not in named)]:
        summary = named[name]["summary"] if name in named else {}
        ours = table_row(name, {"summary": summary})
        paper_values = pub.get(name, {})
        paper = table_row(name, {"summary": paper_values})
        row = [name]
        for c in numeric:
            mine = _num(summary.get(key_of[c]))
            row += [ours[c], paper[c], _diff(c, mine, paper_values.get(key_of[c]))]
        row.append(ours["no-valid"])
        rows.append(row)
    return header, rows


def _stat(s: Mapping[str, Any] | None, key: str) -> str:
    if not isinstance(s, Mapping) or _num(s.get(key)) is None:
        return "-"
    return f"{s[key]:.4f}"


def ifia_table(named: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]]] | None:
    """IFIA statistics per model (mean ± std, median [q25, q75], mean over valid samples only) or None when no
    result has them."""
    header = ["model", "attacked", "no-valid"]
    for metric in ("top-k", "Kendall"):
        header += [f"{metric} mean ± std", f"{metric} median [q25, q75]", f"{metric} valid-only mean"]
    rows = []
    for name, res in named.items():
        stats = res["summary"].get("ifia")
        if not isinstance(stats, dict):
            continue
        row = [name, str(stats.get("attacked", "-")), str(stats.get("no_valid", "-"))]
        for key in ("topk", "kendall"):
            s = stats.get(key) if isinstance(stats.get(key), dict) else None
            row += [
                f"{_stat(s, 'mean')} ± {_stat(s, 'std')}",
                f"{_stat(s, 'median')} [{_stat(s, 'q25')}, {_stat(s, 'q75')}]",
                _stat(s, "valid_mean"),
            ]
        rows.append(row)
    return (header, rows) if rows else None


def protocol_tables(
    named: Mapping[str, Mapping[str, Any]], published: Mapping[str, Mapping[str, Any]] | None = None
) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    """The papers' table once per evaluation protocol, each with the line stating its protocol: results of
    different protocols never share a table. ``published`` rows go with their model's protocol (rows of models
    without results go with the first)."""
    pub = dict(published or {})
    out = []
    for i, (fp, protocol, names) in enumerate(protocol_lib.group(named)):
        mine = {n: v for n, v in pub.items() if n in names or (i == 0 and n not in named)}
        line = protocol_lib.summary(protocol, fp) if protocol else "protocol unknown (no readable evaluation config)"
        out.append((line, results_table({n: named[n] for n in names}, mine or None)))
    return out


# --------------------------------------------------------------------------------------------------------------
# figures from plain arrays


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


def tradeoff_plot(
    names: Sequence[str],
    natural_acc: Sequence[float | None],
    pgd_acc: Sequence[float | None],
    robustness: Mapping[str, Sequence[float | None]],
) -> Figure:
    """Accuracy vs. attributional robustness: one panel per entry of ``robustness`` (metric name -> value per
    model); circles are natural accuracy, triangles PGD accuracy; None values are not drawn."""
    fig = Figure(figsize=(4.6 * len(robustness), 3.8))
    axes = fig.subplots(1, len(robustness), squeeze=False)[0]
    for ax, (metric, xs) in zip(axes, robustness.items(), strict=True):
        for i, name in enumerate(names):
            x = _num(xs[i])
            if x is None:
                continue
            for acc, marker, kind in ((natural_acc[i], "o", "natural"), (pgd_acc[i], "^", "PGD")):
                if _num(acc) is not None:
                    ax.scatter([x], [acc], color=_colour(i), marker=marker, s=60, label=_label(f"{name} ({kind})"))
        values = [v for v in map(_num, xs) if v is not None]
        ax.set_xlim(min(0.0, *values) - 0.02, 1.02)
        ax.set_xlabel(_label(metric))
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.05)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
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
    appearance), the same in every panel."""
    fig = Figure(figsize=(4.2 * len(panels), 3.6))
    colour = _colours(colour_order)
    for ax, (panel, curves) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels.items(), strict=True):
        for name, (x, y) in curves.items():
            ax.plot(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64), marker="o", ms=3,
                    color=colour(name), label=_label(name))  # fmt: skip
        ax.set_title(_label(panel))
        ax.set_xlabel(_label(xlabel))
        ax.set_ylabel(_label(ylabel or panel))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(_label(title))
    fig.tight_layout()
    return fig


def _show_image(ax: Any, img: np.ndarray) -> None:
    if img.shape[0] == 3:
        ax.imshow(np.clip(img.transpose(1, 2, 0), 0, 1), interpolation="nearest")
    else:
        ax.imshow(img.mean(0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")


def saliency_grid(examples: SaliencyExamples, *, title: str | None = None) -> Figure:
    """Rows of clean image | attribution map | IFIA-perturbed image | perturbed map, with the top-k intersection and
    Kendall tau between the two maps under each row (maps are shown each scaled to its own maximum)."""
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
        axes[r, 0].set_ylabel(f"#{examples.indices[r]} (label {examples.labels[r]})", fontsize=8)
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


# --------------------------------------------------------------------------------------------------------------
# saliency examples


@dataclass
class SaliencyExamples:
    """Clean and IFIA-perturbed examples of one model as numpy arrays.

    ``images``/``adv_images`` float ``(n, C, H, W)`` in [0, 1]; ``maps``/``adv_maps`` ``(n, H, W)``: saliency maps
    (|attribution| summed over channels) on the clean and perturbed inputs; ``topk``/``kendall`` ``(n,)`` between
    them (1.0 where no step kept the label); ``valid`` ``(n,)`` bool; ``indices``/``labels`` ``(n,)`` int: dataset
    indices and true labels; ``k``: the top-k size; ``attribution``: the method's name.
    """

    images: np.ndarray
    maps: np.ndarray
    adv_images: np.ndarray
    adv_maps: np.ndarray
    topk: np.ndarray
    kendall: np.ndarray
    valid: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    k: int
    attribution: str


def _candidates(results: Mapping[str, Any], n_total: int, cfg: EvalConfig) -> list[int]:
    pe = results.get("per_example") if isinstance(results.get("per_example"), dict) else {}
    for cols in ((pe.get("ifia") or {}) if isinstance(pe.get("ifia"), dict) else {}, pe):
        idx = cols.get("index")
        if isinstance(idx, list) and idx and all(isinstance(i, int) and 0 <= i < n_total for i in idx):
            return idx
    return select_indices(n_total, cfg).tolist()


def saliency_examples(
    checkpoint: str | Path,
    results: Mapping[str, Any],
    *,
    n_examples: int = 4,
    ifia_overrides: Mapping[str, Any] | None = None,
) -> SaliencyExamples:
    """Attack the attributions of the first ``n_examples`` correctly classified evaluated samples.

    The checkpoint is loaded with :func:`attrobust.models.load`; the dataset, attribution method and IFIA
    setting come from ``results["eval_config"]`` (``ifia_overrides`` replaces IFIA fields, e.g.
    ``{"restarts": 1}``), the dataset from that config or the training config stored in the results / the
    checkpoint; the samples are the ones IFIA attacked in the evaluation (correctly classified ones), in order.
    Seeded by the config's seed. Raises ``ValueError`` when the config is unusable or no evaluated sample is
    classified correctly, and the data loader's errors when the dataset is unavailable.
    """
    check_int(n_examples, "n_examples")
    eval_config = results.get("eval_config")
    if not isinstance(eval_config, Mapping):
        raise ValueError("results: expected an 'eval_config' mapping to rebuild the attack, got none")
    raw = json.loads(json.dumps(eval_config))
    raw["ifia"] = {**(raw.get("ifia") or {}), **dict(ifia_overrides or {})}
    cfg = from_dict(EvalConfig, raw)
    model, info = models_lib.load(checkpoint, map_location=cfg.device)
    train_config = results.get("train_config") if isinstance(results.get("train_config"), dict) else None
    ds = _resolve_dataset(cfg, train_config or info.get("config"))
    candidates = torch.tensor(_candidates(results, len(ds), cfg), dtype=torch.int64)
    with torch.inference_mode():
        pred = torch.cat([model(ds.images[candidates[i : i + 256]].to(cfg.device)).argmax(1).cpu()
                          for i in range(0, len(candidates), 256)])  # fmt: skip
    chosen = candidates[pred == ds.labels[candidates]][:n_examples]
    if not len(chosen):
        raise ValueError("no correctly classified sample among the evaluated ones: nothing to attack")
    x, y = ds.images[chosen].to(cfg.device), ds.labels[chosen].to(cfg.device)
    i = cfg.ifia
    gen = torch.Generator(device=cfg.device).manual_seed(derive_seed(cfg.seed, "report"))
    res = attacks.ifia(
        model, x, y, attribution=i.attribution, k=i.k, eps=i.eps, step_size=i.step_size, steps=i.steps,
        beta=i.beta, dissimilarity=i.dissimilarity, ig_steps=i.ig_steps, restarts=i.restarts,
        select_by=i.select_by, random_start=i.random_start, generator=gen,
    )  # fmt: skip
    attr = _attribution_fn(i.attribution, i.ig_steps, None)
    h, w = x.shape[-2:]
    maps = [saliency_map(attr(model, t, y)).detach().reshape(-1, h, w).cpu().numpy() for t in (x, res.x_adv)]
    return SaliencyExamples(
        images=x.cpu().numpy(),
        maps=maps[0],
        adv_images=res.x_adv.detach().cpu().numpy(),
        adv_maps=maps[1],
        topk=res.topk.double().cpu().numpy(),
        kendall=res.kendall.double().cpu().numpy(),
        valid=res.valid.cpu().numpy(),
        indices=chosen.numpy(),
        labels=y.cpu().numpy(),
        k=i.k,
        attribution=i.attribution,
    )


# --------------------------------------------------------------------------------------------------------------
# the dispatcher: what the results contain -> figures


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
    CurveSpec("ssim_noise", "SSIM of saliency maps under input noise", x="sigma", xlabel="noise std",
              ylabel="SSIM", series="ssim"),
)  # fmt: skip


@dataclass
class Section:
    """One figure of the report: its title, file stem, PNG bytes and caption."""

    title: str
    slug: str
    png: bytes
    caption: str = ""


@dataclass
class _Collected:
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, title: str, slug: str, fig: Figure, caption: str = "") -> None:
        self.sections.append(Section(title, slug, png_bytes(fig), caption))


def _curve_panels(
    spec: CurveSpec, named: Mapping[str, Mapping[str, Any]], notes: list[str]
) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    panels: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for name, res in named.items():
        block = res.get(spec.key)
        if block is None:
            continue
        x = _floats(block.get(spec.x)) if isinstance(block, Mapping) else None
        if x is None or not len(x):
            notes.append(f"{spec.key} of {name}: expected a mapping with a numeric list {spec.x!r}; left out")
            continue
        if spec.series is not None:
            ys = block.get(spec.series)
            columns = list(ys.items()) if isinstance(ys, Mapping) else [(spec.ylabel or spec.series, ys)]
        else:
            columns = [(title, block.get(col)) for col, title in spec.panels if col in block]
        for panel, values in columns:
            y = _floats(values)
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
        label: [_num(x.get(key)) for x in s] for key, label in (("topk", "top-k intersection"), ("kendall", "Kendall"))
    }
    rob = {k: v for k, v in rob.items() if any(x is not None for x in v)}
    nat, pgd = [_num(x.get("natural_acc")) for x in s], [_num(x.get("pgd_acc")) for x in s]
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
    named: Mapping[str, Mapping[str, Any]],
    models: Mapping[str, str | Path],
    *,
    n_examples: int,
    ifia_overrides: Mapping[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
) -> tuple[list[Section], list[str]]:
    """A saliency-map grid per model of ``models`` (name -> checkpoint); a model whose grid cannot be computed
    (no usable config, dataset or device unavailable, nothing correctly classified) gets a note instead."""
    out = _Collected()
    for i, (name, ckpt) in enumerate(models.items()):
        res = named[name]
        if echo:
            echo(f"saliency grid: {name} ({ckpt})")
        try:
            ex = saliency_examples(ckpt, res, n_examples=n_examples, ifia_overrides=ifia_overrides)
        except (ValueError, OSError, RuntimeError) as err:  # e.g. dataset not installed, device not available
            out.notes.append(f"saliency grid of {name} left out: {err}")
            continue
        caption = (
            f"{name}: {ex.attribution} maps of correctly classified test samples before and after IFIA "
            f"(top-{ex.k} intersection and Kendall tau between the two maps)."
        )
        sha = res.get("checkpoint_sha256")
        if isinstance(sha, str) and sha != file_sha256(ckpt):
            caption += " Note: this checkpoint is not the one the results were computed with."
        out.add(f"Saliency maps under IFIA: {name}", f"saliency_{i}_{_slug(name)}", saliency_grid(ex, title=name),
                caption)  # fmt: skip
    return out.sections, out.notes


# --------------------------------------------------------------------------------------------------------------
# metadata


def _git_revision() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + (" (modified)" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def report_metadata() -> dict[str, Any]:
    """Code and environment of the report: package, git revision, Python, torch, numpy, matplotlib, platform."""
    from .. import __version__

    return {
        "attrobust": __version__,
        "git": _git_revision(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


_RUN_KEYS = ("path", "checkpoint", "checkpoint_sha256", "dataset", "created", "torch_version", "timings")


def run_metadata(res: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance and configuration of one result (checkpoint, dataset, timings, eval and train config)."""
    meta = {key: res.get(key) for key in _RUN_KEYS if key in res}
    meta["eval_config"] = res.get("eval_config")
    meta["train_config"] = res.get("train_config")
    return meta


# --------------------------------------------------------------------------------------------------------------
# rendering


_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}th[colspan]{text-align:center}td:first-child,th:first-child{text-align:left}
td.paper{color:#555}td.diff{font-style:italic}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
p.protocol,p.meta{font-size:.9em;color:#444}
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_table(header: list[str], rows: list[list[str]], grouped: bool = False) -> str:
    lines = ["<table>", "<thead>"]
    if grouped:  # model | 4 x (ours, paper, diff) | no-valid
        top = ['<th rowspan="2">model</th>']
        top += [f'<th colspan="3">{_e(header[1 + 3 * j])}</th>' for j in range((len(header) - 2) // 3)]
        top.append(f'<th rowspan="2">{_e(header[-1])}</th>')
        sub = ["<th>ours</th><th>paper</th><th>difference</th>"] * ((len(header) - 2) // 3)
        lines += ["<tr>" + "".join(top) + "</tr>", "<tr>" + "".join(sub) + "</tr>"]
    else:
        lines.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    lines.append("</thead>")
    lines.append("<tbody>")
    for row in rows:
        cells = []
        for j, cell in enumerate(row):
            cls = ""
            if grouped and 0 < j < len(row) - 1:
                cls = ("", ' class="paper"', ' class="diff"')[(j - 1) % 3]
            cells.append(f"<td{cls}>{_e(cell)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    lines += ["</tbody>", "</table>"]
    return "\n".join(lines)


def _md_cell(value: Any) -> str:
    """Text for a Markdown table cell, heading or link text: HTML-escaped, Markdown punctuation escaped."""
    text = html.escape(str(value), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*|\[\]])", r"\\\1", text)


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|")
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _render_html(
    title: str,
    tables: list[tuple[str, tuple[list[str], list[list[str]]]]],
    stats: tuple[list[str], list[list[str]]] | None,
    figures: list[Section],
    grids: list[Section],
    notes: list[str],
    meta: dict[str, Any],
) -> str:
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
        f'<p class="meta">attrobust {_e(meta["report"]["attrobust"])}, created {_e(meta["report"]["created"])}</p>',
        "<h2>Results</h2>",
    ]
    for line, (header, rows) in tables:
        parts.append(f'<p class="protocol"><b>Protocol</b> {_e(line)}</p>')
        parts.append(_html_table(header, rows, grouped=len(header) > len(TABLE_COLUMNS)))
    if stats is not None:
        parts += ["<h2>IFIA statistics</h2>", _html_table(*stats)]

    def figure(sec: Section) -> str:
        data = base64.b64encode(sec.png).decode("ascii")
        return (
            f'<figure id="{_e(sec.slug)}"><img src="data:image/png;base64,{data}" alt="{_e(sec.title)}">'
            f"<figcaption><b>{_e(sec.title)}</b>{'. ' + _e(sec.caption) if sec.caption else ''}</figcaption></figure>"
        )

    if figures:
        parts += ["<h2>Figures</h2>", *map(figure, figures)]
    if grids:
        parts += ["<h2>Saliency maps under attack</h2>", *map(figure, grids)]
    if notes:
        parts += ["<h2>Left out</h2>", "<ul>", *(f"<li>{_e(n)}</li>" for n in notes), "</ul>"]
    parts += [
        "<details>",
        "<summary>Configuration and run metadata</summary>",
        f"<pre>{_e(json.dumps(meta, indent=1, default=str))}</pre>",
        "</details>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"


def _render_md(
    title: str,
    tables: list[tuple[str, tuple[list[str], list[list[str]]]]],
    stats: tuple[list[str], list[list[str]]] | None,
    images: list[tuple[Section, str]],
    notes: list[str],
    meta: dict[str, Any],
) -> str:
    parts = [f"# {_md_cell(title)}", "", "## Results", ""]
    for line, table in tables:
        parts += [f"**Protocol** {_md_cell(line)}", "", _md_table(*table), ""]
    if stats is not None:
        parts += ["", "## IFIA statistics", "", _md_table(*stats)]
    if images:
        parts += ["", "## Figures", ""]
        for sec, filename in images:
            parts += [f"### {_md_cell(sec.title)}", "", f"![{_md_cell(sec.title)}]({filename})", ""]
            if sec.caption:
                parts += [_md_cell(sec.caption), ""]
    if notes:
        parts += ["", "## Left out", "", *(f"- {_md_cell(n)}" for n in notes)]
    parts += [
        "",
        "<details><summary>Configuration and run metadata</summary>",
        "",
        "```json",
        json.dumps(meta, indent=1, default=str).replace("```", "'''"),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(parts)


def write_report(
    results: Sequence[ResultLike | NamedResult] | Mapping[str, ResultLike],
    out_dir: str | Path,
    *,
    title: str = "attrobust report",
    models: Mapping[str, str | Path] | None = None,
    published: Mapping[str, Mapping[str, Any]] | None = None,
    n_examples: int = 4,
    ifia_overrides: Mapping[str, Any] | None = None,
    echo: Callable[[str], None] | None = None,
) -> tuple[Path, Path]:
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``report_*.png`` beside it) into ``out_dir``.

    Args:
        results: evaluation results (``results.json`` paths or the dicts :func:`evaluate` returns), as a list
            (items may be ``(name, result)`` pairs) or a mapping ``name -> result`` (see :func:`load_results`).
        out_dir: directory to write into (created).
        title: heading of the report.
        models: ``name -> checkpoint``: draw a saliency-map grid for these models (names of ``results``); the
            attack is re-run on ``n_examples`` test images with the stored evaluation config.
        published: the papers' numbers, ``name -> {natural_acc, pgd_acc, topk, kendall}`` as fractions; adds
            paper and difference columns (ours - paper).
        n_examples: images per saliency grid.
        ifia_overrides: IFIA config fields replaced for the grids only (e.g. ``{"restarts": 1}`` to save time).
        echo: called with progress lines and a line per section left out.

    Returns ``(html_path, md_path)``. Raises ``FileNotFoundError`` for a missing results file or checkpoint and
    ``ValueError`` for results that are not evaluation results, bad ``published`` entries, a ``models`` name
    that is not among the results or a bad ``n_examples``.
    """
    check_int(n_examples, "n_examples")
    named = load_results(results)
    models = dict(models or {})
    for name, ckpt in models.items():
        if name not in named:
            raise ValueError(f"models: expected names of the results ({', '.join(map(repr, named))}), got {name!r}")
        if not Path(ckpt).is_file():
            raise FileNotFoundError(f"models[{name!r}]: checkpoint not found: {ckpt}")
    _check_published(published)
    tables = protocol_tables(named, published)
    stats = ifia_table(named)
    figures, notes = build_figures(named)
    grids, grid_notes = build_saliency_sections(
        named, models, n_examples=n_examples, ifia_overrides=ifia_overrides, echo=echo
    )
    notes += grid_notes
    if not models:
        notes.append("no checkpoints given (models): saliency-map grids left out")
    meta = {"report": report_metadata(), "runs": {name: run_metadata(res) for name, res in named.items()}}
    if published:
        meta["published"] = {str(k): dict(v) for k, v in published.items()}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = []
    for sec in [*figures, *grids]:
        filename = f"report_{sec.slug}.png"
        (out / filename).write_bytes(sec.png)
        images.append((sec, filename))
    html_path, md_path = out / "report.html", out / "report.md"
    html_path.write_text(_render_html(title, tables, stats, figures, grids, notes, meta), encoding="utf-8")
    md_path.write_text(_render_md(title, tables, stats, images, notes, meta), encoding="utf-8")
    if echo:
        for note in notes:
            echo(f"left out: {note}")
    return html_path, md_path
