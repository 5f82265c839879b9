"""The ONE place that formats a plain-text results table (the command line's and the quickstart's).

:func:`text_table` aligns columns; :func:`table_row` / :func:`format_table` give the papers' table of
evaluation results, :func:`format_runs` / :func:`format_leaderboard` the tables of the results database
(:func:`leaderboard_csv`: the leaderboard as CSV).

Imports nothing of the package: it formats dicts that other modules produce.
"""

from __future__ import annotations

import csv
import io
import math
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

TABLE_COLUMNS = ("model", "natural acc", "PGD acc", "top-k", "Kendall", "no-valid")
# metrics listed by ``attrobust runs``
LISTED_METRICS = ("natural_acc", "pgd_acc", "topk", "kendall", "test_acc", "train.loss")


def escape_controls(text: str) -> str:
    """``text`` with every control character (ANSI escapes, newlines, tabs, ...) written as its Python escape
    (``\\x1b``, ``\\n``), so a name can neither colour a terminal nor forge a table row."""
    return "".join(repr(c)[1:-1] if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in text)


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, trim: bool = True) -> str:
    """Aligned plain-text table: header, rule, one line per row; ``trim`` strips the padding at the end of each
    line (the papers' table keeps it). Control characters in cells are escaped (:func:`escape_controls`)."""
    rows = [[escape_controls(str(v)) for v in r] for r in rows]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        text = " | ".join(v.ljust(w) for v, w in zip(cells, widths, strict=True))
        return text.rstrip() if trim else text

    return "\n".join([line(columns), "-+-".join("-" * w for w in widths), *(line(r) for r in rows)])


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if _finite(value) else "-"


def _num(value: Any) -> str:
    return f"{value:.4f}" if _finite(value) else "-"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_row(name: str, results: Mapping[str, Any]) -> dict[str, str]:
    """The papers' table columns for one result dict of :func:`~attrobust.experiments.evaluate.evaluate`
    (``-`` for what was not run and for a value that is not a finite number)."""
    s = results["summary"]
    ifia = s.get("ifia") if isinstance(s.get("ifia"), Mapping) else {}
    no_valid = "-" if s.get("no_valid") is None else f"{s['no_valid']}/{ifia.get('attacked', '-')}"
    row = {
        "model": name,
        "natural acc": _pct(s.get("natural_acc")),
        "PGD acc": _pct(s.get("pgd_acc")),
        "top-k": _num(s.get("topk")),
        "Kendall": _num(s.get("kendall")),
        "no-valid": no_valid,
    }
    metrics = s.get("metrics") if isinstance(s.get("metrics"), Mapping) else {}
    gini = metrics["gini"].get("mean") if isinstance(metrics.get("gini"), Mapping) else None
    if gini is not None:
        row["Gini"] = _num(gini)
    return row


def format_table(rows: Sequence[Mapping[str, str]]) -> str:
    """A plain-text table (header, rule, one line per row) of :func:`table_row` dicts; optional columns (Gini)
    appear when some row has them (``-`` in the others)."""
    columns = [*TABLE_COLUMNS, *dict.fromkeys(c for r in rows for c in r if c not in TABLE_COLUMNS)]
    return text_table(columns, [[r.get(c, "-") for c in columns] for r in rows], trim=False)


def _when(created: Any) -> str:
    return str(created)[:19].replace("T", " ")


def format_runs(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table of :meth:`~attrobust.experiments.results.store.Store.runs` rows printed by ``attrobust runs``;
    ``protocol`` is an evaluation's fingerprint (``-`` for training runs and evaluations without one): the metrics
    of rows with different fingerprints were measured differently and are not comparable."""
    columns = ("id", "kind", "created (UTC)", "name", "dataset", "model", "objective", "seed", "status", "seconds",
               "protocol", "metrics")  # fmt: skip
    body = []
    for r in rows:
        metrics = " ".join(f"{k}={r['metrics'][k]:.4f}" for k in LISTED_METRICS if k in r.get("metrics", {}))
        body.append([
            str(r["id"]), r["kind"], _when(r["created_at"]), _fmt(r["name"]), _fmt(r["dataset"]), _fmt(r["model"]),
            _fmt(r["objective"]), _fmt(r["seed"]), r["status"], _fmt(r["duration_s"], 1), _fmt(r.get("protocol")),
            metrics or "-",
        ])  # fmt: skip
    return text_table(columns, body)


def leaderboard_table(
    rows: Sequence[Mapping[str, Any]], extra: Sequence[str] = (), *, digits: int | None = 4
) -> tuple[list[str], list[list[str]]]:
    """The leaderboard as ``(columns, rows)`` of strings: rank, the ranking metric, the ``extra`` metrics (each row's
    ``values[name]``, ``-`` when the run did not measure it), then the run's identity. ``digits=None`` writes
    numbers in full precision and a missing value as an empty cell (for CSV)."""
    metric = rows[0]["metric"] if rows else "value"
    columns = ["rank", metric, *extra, "name", "model", "objective", "seed", "kind", "n", "created (UTC)", "run"]

    def cell(value: Any) -> str:
        if digits is not None:
            return _fmt(value, digits)
        return "" if value is None else repr(value) if isinstance(value, float) else str(value)

    body = [
        [str(r["rank"]), cell(r["value"]), *(cell((r.get("values") or {}).get(m)) for m in extra), cell(r["name"]),
         cell(r["model"]), cell(r["objective"]), cell(r["train_seed"]), r["kind"], cell(r["n"]),
         _when(r["created_at"]), str(r["run_id"])]
        for r in rows
    ]  # fmt: skip
    return columns, body


def format_leaderboard(rows: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> str:
    """The table of :meth:`~attrobust.experiments.results.store.Store.leaderboard` rows printed by
    ``attrobust leaderboard``, with a column per metric of ``extra`` (each row's ``values[name]``)."""
    return text_table(*leaderboard_table(rows, extra))


def leaderboard_csv(rows: Sequence[Mapping[str, Any]], extra: Sequence[str] = ()) -> str:
    """The leaderboard of :func:`format_leaderboard` as CSV text (numbers in full precision, missing ones empty)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    columns, body = leaderboard_table(rows, extra, digits=None)
    writer.writerow(columns)
    writer.writerows(body)
    return buf.getvalue()
