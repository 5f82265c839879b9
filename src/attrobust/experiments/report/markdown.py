"""The report as Markdown: the same tables and notes, links to the tables' CSV and LaTeX files, the figures as
relative links to the PNG (and PDF) files written beside it (:attr:`.page.Section.filename`), the metadata in a
JSON code block. Text is HTML-escaped and
Markdown punctuation escaped."""

from __future__ import annotations

import html
import json
import re
from typing import Any

from .intervals import METHOD
from .page import Page


def _cell(value: Any) -> str:
    """Text for a Markdown table cell, heading or link text: HTML-escaped, Markdown punctuation escaped."""
    text = html.escape(str(value), quote=False).replace("\n", " ")
    return re.sub(r"([\\`*|\[\]])", r"\\\1", text)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join([":---", *["---:"] * (len(header) - 1)]) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def render(page: Page) -> str:
    """The Markdown text of ``page`` (figures and grids linked by file name)."""
    parts = [f"# {_cell(page.title)}", "", "## Results", ""]
    for block in page.tables:
        parts += [f"**Protocol** {_cell(block.line)}", "", _table(*block.results), ""]
        if block.metrics is not None:
            parts += ["### Suite metrics", "", _table(*block.metrics), ""]
        if block.ifia is not None:
            parts += ["### IFIA statistics", "", _table(*block.ifia), ""]
    parts += ["", _cell(METHOD), ""]
    files = (f"[{stem}.csv]({stem}.csv), [{stem}.tex]({stem}.tex)" for stem, _, _ in page.exported_tables())
    parts += ["Tables as CSV and LaTeX (booktabs): " + ", ".join(files), ""]
    images = [*page.figures, *page.grids]
    if images:
        parts += ["", "## Figures", ""]
        for sec in images:
            parts += [f"### {_cell(sec.title)}", "", f"![{_cell(sec.title)}]({sec.filename})", ""]
            if sec.pdf:
                parts += [f"[PDF]({sec.pdf_filename})", ""]
            if sec.caption:
                parts += [_cell(sec.caption), ""]
    if page.notes:
        parts += ["", "## Left out", "", *(f"- {_cell(n)}" for n in page.notes)]
    parts += [
        "",
        "<details><summary>Configuration and run metadata</summary>",
        "",
        "```json",
        json.dumps(page.meta, indent=1, default=str).replace("```", "'''"),
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(parts)
