"""The report's tables as ``(header, rows)`` of strings: the papers' table (with the published numbers beside
ours), the table of the suite metrics and the IFIA statistics, one of each per evaluation protocol. Cells
are formatted by :func:`attrobust.experiments.evaluate.table_row`, the one formatter of a result's row; every
mean has its confidence interval (``<column> 95% CI``, :mod:`.intervals`) from the stored per-example values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import protocol as protocol_lib
from ..results.tables import TABLE_COLUMNS, table_row
from .inputs import num, per_example_similarities
from .intervals import LEVEL, interval_of
from .page import ProtocolTables, Table

# Keys of a ``published`` entry: the summary keys of the table's numeric columns, as fractions (0.9912, not 99.12).
PUBLISHED_KEYS = {"natural_acc": "natural acc", "pgd_acc": "PGD acc", "topk": "top-k", "kendall": "Kendall"}
_PCT_COLUMNS = ("natural acc", "PGD acc")
CI = f" {100 * LEVEL:.0f}% CI"  # suffix of an interval's column
# the per-example column behind each accuracy of the papers' table (top-k and Kendall: the IFIA similarities)
_COLUMN_OF = {"natural_acc": "natural_correct", "pgd_acc": "pgd_correct"}


def _diff(column: str, ours: float | None, paper: float | None) -> str:
    """``ours - paper``: percentage points for accuracies, plain for top-k / Kendall; ``-`` if either is missing."""
    if ours is None or paper is None:
        return "-"
    d = ours - paper
    return f"{100 * d:+.2f} pp" if column in _PCT_COLUMNS else f"{d:+.4f}"


def check_published(published: Mapping[str, Mapping[str, Any]] | None) -> dict[str, dict[str, float | None]]:
    """``published`` as ``{model: {natural_acc, pgd_acc, topk, kendall}}`` (missing -> None); raises
    ``ValueError`` for an entry that is not a mapping, an unknown metric or a value that is not a finite number."""
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
            if value is not None and num(value) is None:
                raise ValueError(f"published[{name!r}][{key!r}]: expected a finite number or null, got {value!r}")
        out[str(name)] = {key: num(entry.get(key)) for key in PUBLISHED_KEYS}
    return out


def _per_example(res: Mapping[str, Any], key: str) -> Any:
    """The stored per-example values behind the summary figure ``key`` (None when not stored)."""
    pe = res.get("per_example")
    if not isinstance(pe, Mapping):
        return None
    if key in _COLUMN_OF:
        return pe.get(_COLUMN_OF[key])
    sims = per_example_similarities(res)
    return None if sims is None else list(sims[key])


def _interval(res: Mapping[str, Any], key: str, column: str) -> str:
    return interval_of(_per_example(res, key), res["summary"].get(key), percent=column in _PCT_COLUMNS)


def results_table(
    named: Mapping[str, Mapping[str, Any]], published: Mapping[str, Mapping[str, Any]] | None = None
) -> Table:
    """The papers' table as ``(header, rows)`` of strings (cells formatted as :func:`evaluate.table_row`).

    Without ``published``: ``model | natural acc | natural acc 95% CI | PGD acc | ... | Kendall 95% CI |
    no-valid``, each interval from the stored per-example values (:func:`.intervals.interval_of`). With it (a
    mapping model -> ``{natural_acc, pgd_acc, topk, kendall}`` as fractions, like the results' summary), each
    numeric column is followed by its interval, ``X (paper)`` and ``X (diff)`` = ours - paper (accuracies in
    percentage points). Models only in ``published`` get a row of their own with ``-`` for ours.
    """
    pub = check_published(published)
    numeric = [c for c in TABLE_COLUMNS if c not in ("model", "no-valid")]
    header = ["model"]
    for c in numeric:
        header += [c, c + CI, *((f"{c} (paper)", f"{c} (diff)") if pub else ())]
    header.append("no-valid")
    key_of = {col: key for key, col in PUBLISHED_KEYS.items()}
    rows = []
    for name in [*named, *(n for n in pub if n not in named)]:
        res = named.get(name, {"summary": {}})
        ours = table_row(name, res)
        paper_values = pub.get(name, {})
        paper = table_row(name, {"summary": paper_values})
        row = [name]
        for c in numeric:
            row += [ours[c], _interval(res, key_of[c], c)]
            if pub:
                row += [paper[c], _diff(c, num(res["summary"].get(key_of[c])), paper_values.get(key_of[c]))]
        row.append(ours["no-valid"])
        rows.append(row)
    return header, rows


def _stat(s: Mapping[str, Any] | None, key: str) -> str:
    if not isinstance(s, Mapping) or num(s.get(key)) is None:
        return "-"
    return f"{s[key]:.4f}"


def _valid_only(res: Mapping[str, Any], key: str) -> list[float] | None:
    """The per-example IFIA values of ``key`` over the valid samples only (None when not stored)."""
    pe = res.get("per_example")
    cols = pe.get("ifia") if isinstance(pe, Mapping) else None
    sims = per_example_similarities(res)
    if sims is None or not isinstance(cols, Mapping) or not isinstance(cols.get("valid"), list):
        return None
    return [float(v) for v, ok in zip(sims[key], cols["valid"], strict=True) if ok]


def ifia_table(named: Mapping[str, Mapping[str, Any]]) -> Table | None:
    """IFIA statistics per model (attacked images, those without a valid perturbation, those whose top-k attack
    started at a flat point of its objective (``-`` in results that predate the count); mean ± std and its
    interval, median [q25, q75], mean over valid samples only and its interval) or None when no result has them."""
    header = ["model", "attacked", "no-valid", "flat-start"]
    for metric in ("top-k", "Kendall"):
        header += [f"{metric} mean ± std", f"{metric} mean{CI}", f"{metric} median [q25, q75]",
                   f"{metric} valid-only mean", f"{metric} valid-only mean{CI}"]  # fmt: skip
    rows = []
    for name, res in named.items():
        stats = res["summary"].get("ifia")
        if not isinstance(stats, dict):
            continue
        row = [name, *("-" if stats.get(key) is None else str(stats[key]) for key in ("attacked", "no_valid",
                                                                                       "flat_start"))]
        for key in ("topk", "kendall"):
            s = stats.get(key) if isinstance(stats.get(key), dict) else None
            row += [
                f"{_stat(s, 'mean')} ± {_stat(s, 'std')}",
                interval_of(_per_example(res, key), (s or {}).get("mean")),
                f"{_stat(s, 'median')} [{_stat(s, 'q25')}, {_stat(s, 'q75')}]",
                _stat(s, "valid_mean"),
                interval_of(_valid_only(res, key), (s or {}).get("valid_mean")),
            ]
        rows.append(row)
    return (header, rows) if rows else None


METRIC_COLUMNS = ["model", "metric", "n", "mean", "mean" + CI, "std", "median", "q25", "q75"]


def metrics_table(named: Mapping[str, Mapping[str, Any]]) -> Table | None:
    """Every suite metric of every model (``summary.metrics``: count, mean and its interval, std, median,
    quartiles over the finite per-example values; a ``gamma_*`` summary as its one value in ``mean``), in the
    order the results store them; None when no result has suite metrics."""
    rows = []
    for name, res in named.items():
        metrics = res["summary"].get("metrics")
        pe = res.get("per_example")
        columns = pe.get("metrics") if isinstance(pe, Mapping) else None
        for key, s in (metrics or {}).items():
            if not isinstance(s, Mapping):
                rows.append([name, key, "-", _stat({"v": s}, "v"), *["-"] * 5])
                continue
            values = columns.get(key) if isinstance(columns, Mapping) else None
            count = s.get("count")
            rows.append([name, key, str(count) if isinstance(count, int) else "-", _stat(s, "mean"),
                         interval_of(values, s.get("mean")), *(_stat(s, k) for k in ("std", "median", "q25", "q75"))])
    return (list(METRIC_COLUMNS), rows) if rows else None


def protocol_tables(
    named: Mapping[str, Mapping[str, Any]], published: Mapping[str, Mapping[str, Any]] | None = None
) -> list[ProtocolTables]:
    """The papers' table, the suite metrics' table and the IFIA statistics (the last two None when no result has
    them) once per evaluation protocol, with the line stating the protocol (once per protocol, whatever the number
    of models): results of different protocols never share a table. ``published`` rows go with their model's
    protocol (rows of models without results go with the first)."""
    pub = dict(published or {})
    out = []
    for i, (fp, protocol, names) in enumerate(protocol_lib.group(named)):
        mine = {n: v for n, v in pub.items() if n in names or (i == 0 and n not in named)}
        line = protocol_lib.summary(protocol, fp) if protocol else "protocol unknown (no readable evaluation config)"
        group = {n: named[n] for n in names}
        out.append(ProtocolTables(line, results_table(group, mine or None), metrics_table(group), ifia_table(group)))
    return out
