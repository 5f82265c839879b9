"""What a report holds, for its renderers (:mod:`.html`, :mod:`.markdown`) and the files written beside it: its
figures (:class:`Section`) and the whole page (:class:`Page`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Table = tuple[list[str], list[list[str]]]


@dataclass
class Section:
    """One figure of the report: its title, file stem, PNG bytes, caption and PDF bytes (vector, for papers)."""

    title: str
    slug: str
    png: bytes
    caption: str = ""
    pdf: bytes = b""

    @property
    def filename(self) -> str:
        """The PNG file written beside ``report.md``."""
        return f"report_{self.slug}.png"

    @property
    def pdf_filename(self) -> str:
        """The PDF file written beside the PNG."""
        return f"report_{self.slug}.pdf"


@dataclass(frozen=True)
class ProtocolTables:
    """The tables of one evaluation protocol: the line stating it, the papers' table, the suite metrics' table and
    the IFIA statistics (None when no result of the protocol has them)."""

    line: str
    results: Table
    metrics: Table | None = None
    ifia: Table | None = None


@dataclass(frozen=True)
class Page:
    """The content of a report: the title, the tables of each protocol (:class:`ProtocolTables`), the figures, the
    saliency-map grids, the notes on what was left out and the metadata (``{"report": ..., "runs": ...,
    "published"?: ...}``)."""

    title: str
    tables: list[ProtocolTables]
    figures: list[Section]
    grids: list[Section]
    notes: list[str]
    meta: dict[str, Any]

    def exported_tables(self) -> list[tuple[str, str, Table]]:
        """Every table as ``(file stem, caption, table)``: ``report_results``, ``report_metrics`` and
        ``report_ifia_stats``, suffixed ``_2``, ``_3`` ... per further protocol (the caption states the
        protocol)."""
        out = []
        for i, block in enumerate(self.tables):
            suffix = f"_{i + 1}" if i else ""
            for stem, what, table in (("results", "Results", block.results), ("metrics", "Suite metrics",
                                      block.metrics), ("ifia_stats", "IFIA statistics", block.ifia)):  # fmt: skip
                if table is not None:
                    out.append((f"report_{stem}{suffix}", f"{what}. {block.line}", table))
        return out
