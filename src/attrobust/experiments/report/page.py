"""What a report holds, for its renderers (:mod:`.html`, :mod:`.markdown`): its figures (:class:`Section`) and
the whole page (:class:`Page`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Table = tuple[list[str], list[list[str]]]


@dataclass
class Section:
    """One figure of the report: its title, file stem, PNG bytes and caption."""

    title: str
    slug: str
    png: bytes
    caption: str = ""

    @property
    def filename(self) -> str:
        """The PNG file written beside ``report.md``."""
        return f"report_{self.slug}.png"


@dataclass(frozen=True)
class Page:
    """The content of a report: the title, the papers' table per protocol (``(protocol line, table)``), the IFIA
    statistics (or None), the figures, the saliency-map grids, the notes on what was left out and the metadata
    (``{"report": ..., "runs": ..., "published"?: ...}``)."""

    title: str
    tables: list[tuple[str, Table]]
    stats: Table | None
    figures: list[Section]
    grids: list[Section]
    notes: list[str]
    meta: dict[str, Any]
