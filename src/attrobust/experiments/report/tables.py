"""The report's tables as ``(header, rows)`` of strings: the papers' table (with the published numbers beside
ours), one per evaluation protocol, and the IFIA statistics. Cells are formatted by
:func:`attrobust.experiments.evaluate.table_row`, the one formatter of a result's row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import protocol as protocol_lib
from ..results.tables import TABLE_COLUMNS, table_row
from .inputs import num

Table = tuple[list[str], list[list[str]]]

# Keys of a ``published`` entry: the summary keys of the table's numeric columns, as fractions (0.9912, not 99.12).
PUBLISHED_KEYS = {"natural_acc": "natural acc", "pgd_acc": "PGD acc", "topk": "top-k", "kendall": "Kendall"}
_PCT_COLUMNS = ("natural acc", "PGD acc")


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


def results_table(
    named: Mapping[str, Mapping[str, Any]], published: Mapping[str, Mapping[str, Any]] | None = None
) -> Table:
    """The papers' table as ``(header, rows)`` of strings (cells formatted as :func:`evaluate.table_row`).

    Without ``published``: ``model | natural acc | PGD acc | top-k | Kendall | no-valid``. With it (a mapping
    model -> ``{natural_acc, pgd_acc, topk, kendall}`` as fractions, like the results' summary), each numeric
    column becomes three: ``X``, ``X (paper)``, ``X (diff)`` = ours - paper (accuracies in percentage points).
    Models only in ``published`` get a row of their own with ``-`` for ours.
    """
    pub = check_published(published)
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
            mine = num(summary.get(key_of[c]))
            row += [ours[c], paper[c], _diff(c, mine, paper_values.get(key_of[c]))]
        row.append(ours["no-valid"])
        rows.append(row)
    return header, rows


def _stat(s: Mapping[str, Any] | None, key: str) -> str:
    if not isinstance(s, Mapping) or num(s.get(key)) is None:
        return "-"
    return f"{s[key]:.4f}"


def ifia_table(named: Mapping[str, Mapping[str, Any]]) -> Table | None:
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
) -> list[tuple[str, Table]]:
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
