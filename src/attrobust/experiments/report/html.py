"""The report as one self-contained HTML page: every figure a ``data:image/png;base64`` URI, no script and no
external resource (a Content-Security-Policy meta tag forbids loading any), every piece of text HTML-escaped,
the configurations and run metadata in a collapsible ``<details>``."""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from ..results.tables import TABLE_COLUMNS
from .page import Page, Section

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
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _table(header: list[str], rows: list[list[str]], grouped: bool = False) -> str:
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


def _figure(sec: Section) -> str:
    data = base64.b64encode(sec.png).decode("ascii")
    return (
        f'<figure id="{_e(sec.slug)}"><img src="data:image/png;base64,{data}" alt="{_e(sec.title)}">'
        f"<figcaption><b>{_e(sec.title)}</b>{'. ' + _e(sec.caption) if sec.caption else ''}</figcaption></figure>"
    )


def render(page: Page) -> str:
    """The HTML text of ``page``."""
    meta = page.meta
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(page.title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(page.title)}</h1>",
        f'<p class="meta">attrobust {_e(meta["report"]["attrobust"])}, created {_e(meta["report"]["created"])}</p>',
        "<h2>Results</h2>",
    ]
    for line, (header, rows) in page.tables:
        parts.append(f'<p class="protocol"><b>Protocol</b> {_e(line)}</p>')
        parts.append(_table(header, rows, grouped=len(header) > len(TABLE_COLUMNS)))
    if page.stats is not None:
        parts += ["<h2>IFIA statistics</h2>", _table(*page.stats)]
    if page.figures:
        parts += ["<h2>Figures</h2>", *map(_figure, page.figures)]
    if page.grids:
        parts += ["<h2>Saliency maps under attack</h2>", *map(_figure, page.grids)]
    if page.notes:
        parts += ["<h2>Left out</h2>", "<ul>", *(f"<li>{_e(n)}</li>" for n in page.notes), "</ul>"]
    parts += [
        "<details>",
        "<summary>Configuration and run metadata</summary>",
        f"<pre>{_e(json.dumps(meta, indent=1, default=str))}</pre>",
        "</details>",
        "</body>",
        "</html>",
    ]
    return "\n".join(parts) + "\n"
