"""Former home of the results database, kept as an alias: the store is :mod:`.results.store` (schema in
:mod:`.results.schema`, tables in :mod:`.results.tables`), provenance in :mod:`.provenance` and the hooks of
``train``/``evaluate`` in :mod:`.pipeline`."""

from .pipeline import record_evaluation_result, record_train_result
from .provenance import code_version, file_sha256, git_state, machine_info
from .results.schema import KINDS, METRIC_ALIASES, MIGRATIONS, SCHEMA_VERSION, STATUSES
from .results.store import DB_ENV, DB_FILENAME, Store, flatten_examples, flatten_metrics, open_store, resolve_db_path
from .results.tables import format_leaderboard, format_runs, text_table

__all__ = [
    "DB_ENV",
    "DB_FILENAME",
    "KINDS",
    "METRIC_ALIASES",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "STATUSES",
    "Store",
    "code_version",
    "file_sha256",
    "flatten_examples",
    "flatten_metrics",
    "format_leaderboard",
    "format_runs",
    "git_state",
    "machine_info",
    "open_store",
    "record_evaluation_result",
    "record_train_result",
    "resolve_db_path",
    "text_table",
]
