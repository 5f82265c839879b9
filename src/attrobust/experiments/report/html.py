"""The report as one self-contained HTML page: every figure a ``data:image/png;base64`` URI, no script and no
external resource (a Content-Security-Policy meta tag forbids loading any), every piece of text HTML-escaped,
the configurations and run metadata in a collapsible ``<details>``."""

from __future__ import annotations

import base64
import html
import json
from typing import Any

from .intervals import METHOD
from .page import Page, Section

_CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;
color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.92em;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th{background:#f3f3f3}th[colspan]{text-align:center}td:first-child,th:first-child{text-align:left}
td.paper{color:#555}td.diff{font-style:italic}td.ci{color:#555;font-size:.9em}
figure{margin:1.5em 0}figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.9em;color:#444}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
p.protocol,p.meta{font-size:.9em;color:#444}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


# a column that belongs to the column before it: (suffix, sub-heading, CSS class of its cells)
_SUFFIXES = ((" 95% CI", "95% CI", "ci"), (" (paper)", "paper", "paper"), (" (diff)", "difference", "diff"))


def _groups(header: list[str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Consecutive columns of one figure: ``(heading, [(sub-heading, CSS class), ...])``; a column ``X 95% CI``,
    ``X (paper)`` or ``X (diff)`` joins the group of ``X`` before it."""
    groups: list[tuple[str, list[tuple[str, str]]]] = []
    for h in header:
        joined = next(((sub, cls) for suffix, sub, cls in _SUFFIXES
                       if groups and h == groups[-1][0] + suffix), None)  # fmt: skip
        if joined:
            groups[-1][1].append(joined)
        else:
            groups.append((h, [("", "")]))
    return groups


def _table(header: list[str], rows: list[list[str]]) -> str:
    """A table whose figures with an interval, a paper value or a difference get a two-row heading (the
    figure over ``ours | 95% CI | paper | difference``)."""
    groups = _groups(header)
    lines = ["<table>", "<thead>"]
    if any(len(subs) > 1 for _, subs in groups):
        top, sub = [], []
        for h, subs in groups:
            if len(subs) == 1:
                top.append(f'<th rowspan="2">{_e(h)}</th>')
                continue
            top.append(f'<th colspan="{len(subs)}">{_e(h)}</th>')
            first = "ours" if any(cls == "paper" for _, cls in subs) else "value"
            sub += [f"<th>{_e(s or first)}</th>" for s, _ in subs]
        lines += ["<tr>" + "".join(top) + "</tr>", "<tr>" + "".join(sub) + "</tr>"]
    else:
        lines.append("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>")
    lines += ["</thead>", "<tbody>"]
    classes = [cls for _, subs in groups for _, cls in subs]
    for row in rows:
        cells = [f'<td class="{c}">{_e(v)}</td>' if c else f"<td>{_e(v)}</td>" for v, c in zip(row, classes,
                 strict=True)]  # fmt: skip
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
    for block in page.tables:
        parts.append(f'<p class="protocol"><b>Protocol</b> {_e(block.line)}</p>')
        parts.append(_table(*block.results))
        if block.metrics is not None:
            parts += ["<h3>Suite metrics</h3>", _table(*block.metrics)]
        if block.ifia is not None:
            parts += ["<h3>IFIA statistics</h3>", _table(*block.ifia)]
    files = ", ".join(f"{stem}.csv/.tex" for stem, _, _ in page.exported_tables())
    parts.append(f'<p class="meta">{_e(METHOD)} Tables written beside this page as CSV and LaTeX (booktabs): '
                 f"{_e(files)}; every figure as PNG and PDF.</p>")
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
