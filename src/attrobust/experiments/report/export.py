"""The report's tables as files for papers and spreadsheets: CSV (:func:`csv_text`, RFC 4180 quoting) and a
LaTeX ``booktabs`` table (:func:`latex_text`, every special character escaped)."""

from __future__ import annotations

import csv
import io

from .page import Table

_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "[": "{[}", "]": "{]}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "±": r"$\pm$",
          "\n": " "}  # fmt: skip


def csv_text(table: Table) -> str:
    """``table`` (header, rows of strings) as CSV text, header first."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(table[0])
    writer.writerows(table[1])
    return buf.getvalue()


def latex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped (``±`` becomes ``$\\pm$``; brackets are braced, so a
    cell after ``\\\\`` is never read as its optional argument)."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def latex_text(table: Table, caption: str = "") -> str:
    """``table`` as a LaTeX ``table`` with a ``booktabs`` tabular (``\\toprule``, ``\\midrule``,
    ``\\bottomrule``; first column left-aligned, the others right-aligned) and ``caption``; needs
    ``\\usepackage{booktabs}``."""
    header, rows = table
    lines = [
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[ht]",
        "\\centering",
        *([f"\\caption{{{latex_escape(caption)}}}"] if caption else []),
        f"\\begin{{tabular}}{{l{'r' * (len(header) - 1)}}}",
        "\\toprule",
        " & ".join(latex_escape(h) for h in header) + " \\\\",
        "\\midrule",
        *(" & ".join(latex_escape(c) for c in row) + " \\\\" for row in rows),
        "\\bottomrule",
        "\\end{tabular}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"
