"""What the registries hold, described for people: each entry's one-line summary and its parameters with their
defaults, read from the entry itself (its signature and docstring), so the description cannot drift from the code
(``attrobust list KIND``, ``attrobust list --details``, ``attrobust show NAME``).

A registered callable describes itself through :func:`inspect.signature` (a function, a class such as an
objective's dataclass, or an object with a ``__signature__``, like the composite objectives ``trades+igr``) and
its docstring (an object's is that of its ``__call__``). Names are looked up in any spelling the layer reads
(:func:`attrobust.data.canonical_name`, :func:`attrobust.objectives.canonical_name`).
"""

from __future__ import annotations

import difflib
import inspect
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import attacks, attributions, data, metrics, models, objectives
from .._registry import Registry

__all__ = ["KINDS", "Entry", "describe", "entries", "find", "format_entry", "format_kind", "kind_of", "summary"]

# the registries by the plural word `attrobust list` shows them under, in its order
KINDS: dict[str, Registry] = {
    "datasets": data.DATASETS,
    "models": models.MODELS,
    "attributions": attributions.ATTRIBUTIONS,
    "attacks": attacks.ATTACKS,
    "corruptions": attacks.CORRUPTIONS,
    "objectives": objectives.OBJECTIVES,
    "metrics": metrics.METRICS,
    "smoothing": models.SMOOTHING_KINDS,
}
# the spellings each kind reads besides its registered names
_SPELLINGS: dict[str, Callable[[str], str]] = {"datasets": data.canonical_name, "objectives": objectives.canonical_name}
_MARKUP = re.compile(r":[a-z]+:`~?(?:[\w.]+\.)?([^`]+)`|``([^`]*)``")
SUMMARY_CHARS = 110
_ABBREVIATIONS = {"al", "eq", "eqs", "sec", "fig", "e.g", "i.e", "cf", "vs", "resp", "prop"}


@dataclass(frozen=True)
class Entry:
    """One registered entry: its ``kind`` (a key of :data:`KINDS`), ``name``, one-line ``summary``, the first
    paragraph of its docstring (``text``) and its ``parameters`` as ``(name, default)`` pairs, ``default`` being
    the ``repr`` of the default value, or None for a required parameter."""

    kind: str
    name: str
    summary: str
    text: str
    parameters: tuple[tuple[str, str | None], ...]

    def signature(self) -> str:
        """``name=default, ...`` (required parameters bare; ``*args``/``**kw`` as such)."""
        return ", ".join(p if d is None else f"{p}={d}" for p, d in self.parameters) or "(none)"


def _plain(text: str) -> str:
    """Docstring text without reST markup: ``x`` -> x, :class:`~a.B` -> B."""
    return _MARKUP.sub(lambda m: m.group(1) or m.group(2), text)


def _doc(entry: Any) -> str:
    """The docstring of a function or class; of an object's ``__call__`` (a factory object)."""
    if inspect.isroutine(entry) or inspect.isclass(entry):
        return inspect.getdoc(entry) or ""
    return inspect.getdoc(type(entry).__call__) or inspect.getdoc(entry) or ""


def summary(text: str) -> str:
    """The first sentence of ``text`` (a docstring's first paragraph; a period after an abbreviation such as
    "et al." or "eq." ends none), at most :data:`SUMMARY_CHARS` long."""
    flat = " ".join(text.split())
    first = flat
    for end in re.finditer(r"\.(?=\s|$)", flat):
        word = flat[: end.start()].rsplit(" ", 1)[-1].lstrip("(").lower()
        if word not in _ABBREVIATIONS:
            first = flat[: end.start()]
            break
    return first if len(first) <= SUMMARY_CHARS else first[: SUMMARY_CHARS - 3].rstrip() + "..."


def _parameters(entry: Any) -> tuple[tuple[str, str | None], ...]:
    try:
        signature = inspect.signature(entry)
    except (TypeError, ValueError):  # a builtin without a signature
        return ()
    out = []
    for p in signature.parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            out.append((f"*{p.name}", None))
        elif p.kind is p.VAR_KEYWORD:
            out.append((f"**{p.name}", None))
        else:
            out.append((p.name, None if p.default is p.empty else repr(p.default)))
    return tuple(out)


def describe(kind: str, name: str) -> Entry:
    """The :class:`Entry` of the registered ``name`` of ``kind``; an unknown kind or name raises ``ValueError``."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    name = _SPELLINGS.get(kind, str)(name)
    entry = KINDS[kind].get(name)
    text = _plain(_doc(entry).split("\n\n")[0])
    return Entry(kind, name, summary(text), " ".join(text.split()), _parameters(entry))


def entries(kind: str) -> list[Entry]:
    """Every entry of ``kind``, sorted by name."""
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return [describe(kind, name) for name in KINDS[kind].names()]


def find(name: str) -> list[Entry]:
    """The entries named ``name`` (in any spelling their layer reads), of every kind that has one; none raises
    ``ValueError`` with the closest registered names."""
    found = [describe(kind, name) for kind, registry in KINDS.items() if _SPELLINGS.get(kind, str)(name) in registry]
    if found:
        return found
    every = sorted({n for registry in KINDS.values() for n in registry.names()})
    close = difflib.get_close_matches(name, every, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else "; attrobust list shows every name"
    raise ValueError(f"name: expected a registered name, got {name!r}{hint}")


def kind_of(word: str) -> str:
    """The key of :data:`KINDS` that ``word`` names, plural or singular (``objective`` -> ``objectives``)."""
    for kind in (word, word + "s"):
        if kind in KINDS:
            return kind
    raise ValueError(f"KIND: expected one of {', '.join(KINDS)}, got {word!r}")


def format_kind(kind: str) -> str:
    """``kind:`` and a line ``  name: summary`` per entry, its parameters (with defaults) indented below."""
    rows = [f"  {e.name}: {e.summary}\n      {e.signature()}" for e in entries(kind)]
    return "\n".join([f"{kind}:", *rows])


def format_entry(entry: Entry, width: int = 116) -> str:
    """``name (kind)``, the first paragraph of its docstring and one line per parameter with its default
    (``(required)`` when it has none)."""
    lines = [f"{entry.name} ({entry.kind.removesuffix('s')})",
             textwrap.fill(entry.text, width, initial_indent="  ", subsequent_indent="  "),
             "  parameters:" if entry.parameters else "  parameters: none"]  # fmt: skip
    for param, default in entry.parameters:
        shown = f" = {default}" if default is not None else "" if param.startswith("*") else " (required)"
        lines.append(f"    {param}{shown}")
    return "\n".join(lines)
