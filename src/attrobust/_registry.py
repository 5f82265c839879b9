"""Tiny name -> callable tables shared by every layer.

An unknown name raises ``ValueError`` listing the valid ones, so typos in configs and on the command line are
reported with the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """A named table of callables (models, attributions, attacks, objectives, metrics).

    >>> r = Registry("demo")
    >>> @r.register("double")
    ... def double(v): return 2 * v
    >>> r.get("double")(3)
    6
    """

    def __init__(self, kind: str, entries: Mapping[str, T] | None = None) -> None:
        """An empty table of ``kind`` (the word used in error messages), or one holding ``entries``."""
        self.kind = kind
        self._table: dict[str, T] = {}
        for name, fn in (entries or {}).items():
            self.register(name)(fn)

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator adding ``fn`` under ``name``; registering a name twice is an error."""

        def add(fn: T) -> T:
            if name in self._table:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._table[name] = fn
            return fn

        return add

    def get(self, name: str) -> T:
        """Return the callable registered as ``name`` or raise ``ValueError`` naming the valid ones."""
        try:
            return self._table[name]
        except KeyError:
            valid = ", ".join(sorted(self._table)) or "(none)"
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of: {valid}") from None

    def names(self) -> list[str]:
        """Sorted registered names."""
        return sorted(self._table)

    def __contains__(self, name: object) -> bool:
        return name in self._table

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._table)
