"""Results in: evaluation results files (or the dicts :func:`~attrobust.experiments.evaluate.evaluate` returns)
named and checked, and the number helpers the other report modules share."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ResultLike = str | Path | Mapping[str, Any]
NamedResult = tuple[str, ResultLike]


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


def num(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, strings, booleans)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def floats(values: Any) -> np.ndarray | None:
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
    out = {key: floats(cols.get(key)) for key in ("topk", "kendall")}
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
# results of the wrong shape: the bad part is left out with a note

_NUMBERS = ("natural_acc", "pgd_acc", "topk", "kendall")


def _what(value: Any) -> str:
    return f"a {type(value).__name__} ({str(value)[:40]!r})" if isinstance(value, str) else f"a {type(value).__name__}"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _mapping(value: Any, where: str, expected: str, notes: list[str]) -> dict[str, Any] | None:
    """``value`` as a dict; None (with a note unless it is None) when it is not a mapping."""
    if value is not None and not isinstance(value, Mapping):
        notes.append(f"{where}: expected {expected}, got {_what(value)}; left out")
    return dict(value) if isinstance(value, Mapping) else None


def _clean_ifia(stats: Any, where: str, notes: list[str]) -> dict[str, Any] | None:
    """``summary.ifia`` as a mapping whose ``topk``/``kendall`` are mappings (or absent); else None."""
    out = _mapping(stats, f"{where}.ifia", "a mapping of IFIA statistics", notes)
    if out is None:
        return None
    for key in ("topk", "kendall"):
        if out.get(key) is not None and not isinstance(out[key], Mapping):
            notes.append(f"{where}.ifia.{key}: expected a mapping of statistics, got {_what(out[key])}; left out")
            out[key] = None
    for key in ("attacked", "no_valid", "flat_start"):
        if out.get(key) is not None and not _is_count(out[key]):
            notes.append(f"{where}.ifia.{key}: expected a count, got {_what(out[key])}; left out")
            out[key] = None
    return out


def _clean_metrics(metrics: Any, where: str, notes: list[str]) -> dict[str, Any] | None:
    """``summary.metrics``: per-example metrics as mappings of statistics, ``gamma_*`` summaries as numbers."""
    metrics = _mapping(metrics, f"{where}.metrics", "a mapping metric -> statistics", notes)
    if metrics is None:
        return None
    out = {}
    for key, value in metrics.items():
        scalar = str(key).startswith("gamma_")
        if (scalar and num(value) is None and value is not None) or (not scalar and not isinstance(value, Mapping)):
            expected = "a number" if scalar else "a mapping of statistics (count, mean, std, median, q25, q75)"
            notes.append(f"{where}.metrics.{key}: expected {expected}, got {_what(value)}; left out")
            continue
        out[str(key)] = value
    return out


def clean_results(named: Mapping[str, Mapping[str, Any]]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Copies of ``named`` (of :func:`load_results`) without the parts of the wrong shape, and a note per part
    left out: a table figure (``natural_acc``, ``pgd_acc``, ``topk``, ``kendall``) that is not a number or null,
    a ``no_valid`` that is not a count, ``ifia`` / ``metrics`` / ``per_example`` that are not mappings, a metric's
    statistics that are not a mapping. The inputs are not changed."""
    out: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    for name, res in named.items():
        where = f"{name}: summary"
        summary = dict(res["summary"])
        for key in _NUMBERS:
            if summary.get(key) is not None and num(summary[key]) is None:
                notes.append(f"{where}.{key}: expected a finite number or null, got {_what(summary[key])}; left out")
                summary[key] = None
        if summary.get("no_valid") is not None and not _is_count(summary["no_valid"]):
            notes.append(f"{where}.no_valid: expected a count, got {_what(summary['no_valid'])}; left out")
            summary["no_valid"] = None
        summary["ifia"] = _clean_ifia(summary.get("ifia"), where, notes)
        summary["metrics"] = _clean_metrics(summary.get("metrics"), where, notes)
        per_example = _mapping(res.get("per_example"), f"{name}: per_example", "a mapping of columns", notes)
        out[name] = {**res, "summary": summary, "per_example": per_example}
    return out, notes
