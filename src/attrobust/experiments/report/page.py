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
class Page:
    """The content of a report: the title, per protocol ``(protocol line, papers' table, suite metrics' table or
    None)``, the IFIA statistics (or None), the figures, the saliency-map grids, the notes on what was left out
    and the metadata (``{"report": ..., "runs": ..., "published"?: ...}``)."""

    title: str
    tables: list[tuple[str, Table, Table | None]]
    stats: Table | None
    figures: list[Section]
    grids: list[Section]
    notes: list[str]
    meta: dict[str, Any]

    def exported_tables(self) -> list[tuple[str, str, Table]]:
        """Every table as ``(file stem, caption, table)``: ``report_results`` and ``report_metrics`` (suffixed
        ``_2``, ``_3`` ... per further protocol; the caption states the protocol) and ``report_ifia_stats``."""
        out = []
        for i, (line, table, metrics) in enumerate(self.tables):
            suffix = f"_{i + 1}" if i else ""
            out.append((f"report_results{suffix}", f"Results. {line}", table))
            if metrics is not None:
                out.append((f"report_metrics{suffix}", f"Suite metrics. {line}", metrics))
        if self.stats is not None:
            out.append(("report_ifia_stats", "IFIA statistics", self.stats))
        return out
