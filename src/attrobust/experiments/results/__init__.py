"""Results: the SQLite results database (:mod:`.store`, its tables and migrations in :mod:`.schema`) and the
one formatter of plain-text results tables (:mod:`.tables`).

Results come in as the dicts that training and evaluation produce (through :mod:`..pipeline`); this package
never imports the trainer or the evaluation.
"""

from .store import DB_ENV, DB_FILENAME, Store, flatten_examples, flatten_metrics, open_store, resolve_db_path
from .tables import format_leaderboard, format_runs, format_table, leaderboard_csv, table_row, text_table

__all__ = [
    "DB_ENV",
    "DB_FILENAME",
    "Store",
    "flatten_examples",
    "flatten_metrics",
    "format_leaderboard",
    "format_runs",
    "format_table",
    "leaderboard_csv",
    "open_store",
    "resolve_db_path",
    "table_row",
    "text_table",
]
