"""Reports of evaluation results, written from stored results alone: one self-contained HTML file and a Markdown
summary.

:func:`write_report` reads the JSON results written by :func:`attrobust.experiments.evaluate.evaluate` (or the
dicts it returns) and the saliency examples they reference (:mod:`attrobust.experiments.examples`), and writes
into ``out_dir``:

- ``report.html``: the papers' table (natural acc, PGD acc, top-k, Kendall, no-valid; with ``published`` numbers:
  ours | paper | difference; one table per evaluation protocol, each under the line stating it), suite metrics,
  IFIA statistics, figures and saliency-map grids, every figure embedded as a ``data:image/png;base64`` URI. The
  page has no script and no external resource (a Content-Security-Policy meta tag forbids loading any); every
  piece of text is HTML-escaped; the configurations and run metadata sit in a collapsible ``<details>``.
- ``report.md``: the same tables, with relative links to the figures, which are written beside it as PNG files
  (``report_<figure>.png``);
- every figure also as PDF (``report_<figure>.pdf``) and every table as CSV and LaTeX ``booktabs``
  (``report_results.csv``/``.tex``, ``report_metrics``, ``report_ifia_stats``; :meth:`Page.exported_tables`).

The tables, per protocol (its line once, above its tables): the papers' table, the table of every suite metric
the results hold (count, mean, std, median, quartiles) and the IFIA statistics. Every mean has a 95% percentile
bootstrap interval from the stored per-example values (:mod:`.intervals`, the method stated in the report).
Results of the wrong shape (a figure that is not a number, ``ifia`` or ``metrics`` that are not mappings) lose
the bad part, with a note, never the report (:func:`clean_results`).

It never loads a model or a dataset and never runs an attack: the saliency-map grids (clean image, its map, the
IFIA-perturbed image the evaluation selected and its map, with the evaluation's top-k and Kendall under each
row) come from the examples the evaluation stored; a result without them gets a note instead of a grid.

The house (each module imports only the ones above it in this list; from outside the report only
:mod:`..protocol` (grouping by protocol), :mod:`..examples` (reading the stored examples), the row formatter of
:mod:`..evaluate` (``table_row``, ``TABLE_COLUMNS``), ``attrobust._checks`` and the package version; never a
model, data, attack, attribution or training module):

- ``page.py``: the report's content, :class:`Section` (one figure) and :class:`Page` (what the renderers get);
- ``export.py``: a table as CSV or LaTeX (``booktabs``);
- ``inputs.py``: results in (:func:`load_results`, :func:`clean_results`), the number helpers, per-example IFIA
  similarities;
- ``intervals.py``: the bootstrap confidence intervals of the means;
- ``tables.py``: the tables as ``(header, rows)`` (per protocol, with the published numbers; suite metrics; IFIA
  statistics);
- ``figures.py``: matplotlib figures from plain arrays (box plots, trade-off, curves, saliency grid);
- ``sections.py``: what the results contain -> figures (:data:`CURVES`, :func:`build_figures`,
  :func:`build_saliency_sections`), with notes on what was left out;
- ``metadata.py``: provenance of the report and of each result;
- ``html.py``, ``markdown.py``: the two renderers of a :class:`Page`;
- ``__init__.py``: :func:`write_report` and the public names.

Images follow the package contract: float ``(N, C, H, W)`` in [0, 1]; saliency maps ``(N, H, W)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._checks import check_int
from ..._files import atomic_write, atomic_write_text
from ..examples import SaliencyExamples
from . import html as html_lib
from . import markdown as markdown_lib
from .export import csv_text, latex_text
from .figures import box_plots, curve_plots, pdf_bytes, png_bytes, saliency_grid, tradeoff_plot
from .inputs import NamedResult, ResultLike, clean_results, load_results, per_example_similarities
from .intervals import METHOD, bootstrap_interval
from .metadata import report_metadata, run_metadata
from .page import Page, ProtocolTables, Section
from .sections import CURVES, CurveSpec, build_figures, build_saliency_sections
from .tables import PUBLISHED_KEYS, check_published, ifia_table, metrics_table, protocol_tables, results_table

__all__ = [
    "CURVES",
    "METHOD",
    "PUBLISHED_KEYS",
    "CurveSpec",
    "NamedResult",
    "Page",
    "ProtocolTables",
    "ResultLike",
    "SaliencyExamples",
    "Section",
    "bootstrap_interval",
    "box_plots",
    "build_figures",
    "build_saliency_sections",
    "clean_results",
    "csv_text",
    "curve_plots",
    "ifia_table",
    "latex_text",
    "load_results",
    "metrics_table",
    "pdf_bytes",
    "per_example_similarities",
    "png_bytes",
    "protocol_tables",
    "report_metadata",
    "results_table",
    "run_metadata",
    "saliency_grid",
    "tradeoff_plot",
    "write_report",
]

_DEPRECATED = (
    "write_report: {what} is deprecated and ignored: the saliency-map grids now come from the examples stored with "
    "the results (EvalConfig.examples); the report loads no checkpoint and runs no attack"
)


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
    """Write ``report.html`` (self-contained) and ``report.md`` (+ ``report_*.png``/``.pdf`` figures and
    ``report_*.csv``/``.tex`` tables beside it) into ``out_dir``.

    Args:
        results: evaluation results (``results.json`` paths or the dicts :func:`evaluate` returns), as a list
            (items may be ``(name, result)`` pairs) or a mapping ``name -> result`` (see :func:`load_results`).
        out_dir: directory to write into (created; an existing file there is an error).
        title: heading of the report.
        models: deprecated and ignored (a ``DeprecationWarning``): the grids come from the stored examples.
        published: the papers' numbers, ``name -> {natural_acc, pgd_acc, topk, kendall}`` as fractions; adds
            paper and difference columns (ours - paper).
        n_examples: at most this many rows per saliency grid (of the examples stored with each result).
        ifia_overrides: deprecated and ignored (a ``DeprecationWarning``): no attack is re-run.
        echo: called with a line per section left out.

    Returns ``(html_path, md_path)``. Raises ``FileNotFoundError`` for a missing results file and ``ValueError``
    for results that are not evaluation results, bad ``published`` entries, a bad ``n_examples`` or an ``out_dir``
    that is an existing file; nothing is written then. Parts of a result of the wrong shape are left out with a
    note (:func:`clean_results`), never an exception.
    """
    for what, given in (("models", models), ("ifia_overrides", ifia_overrides)):
        if given:
            warnings.warn(_DEPRECATED.format(what=what), DeprecationWarning, stacklevel=2)
    check_int(n_examples, "n_examples")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"out_dir: expected a directory (existing or to create), got the existing file {out}")
    named, shape_notes = clean_results(load_results(results))
    check_published(published)
    figures, notes = build_figures(named)
    notes = shape_notes + notes
    grids, grid_notes = build_saliency_sections(named, n_examples=n_examples)
    meta: dict[str, Any] = {"report": report_metadata(), "runs": {name: run_metadata(r) for name, r in named.items()}}
    if published:
        meta["published"] = {str(k): dict(v) for k, v in published.items()}
    page = Page(title=title, tables=protocol_tables(named, published), figures=figures, grids=grids,
                notes=notes + grid_notes, meta=meta)  # fmt: skip

    out.mkdir(parents=True, exist_ok=True)
    for sec in [*figures, *grids]:
        atomic_write(out / sec.filename, lambda f, png=sec.png: f.write(png))
        atomic_write(out / sec.pdf_filename, lambda f, pdf=sec.pdf: f.write(pdf))
    for stem, caption, table in page.exported_tables():
        atomic_write_text(out / f"{stem}.csv", csv_text(table))
        atomic_write_text(out / f"{stem}.tex", latex_text(table, caption))
    html_path, md_path = out / "report.html", out / "report.md"
    atomic_write_text(html_path, html_lib.render(page))
    atomic_write_text(md_path, markdown_lib.render(page))
    if echo:
        for note in page.notes:
            echo(f"left out: {note}")
    return html_path, md_path
