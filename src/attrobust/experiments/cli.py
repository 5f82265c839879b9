"""Former home of the command line, kept as an alias: it is :mod:`attrobust.cli`."""

from ..cli import app, friendly, main, registries

__all__ = ["app", "friendly", "main", "registries"]
