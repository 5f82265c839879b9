"""The schema of the results database and its migrations (see :mod:`.store` for where the file lives and
how it is written).

Schema (version :data:`SCHEMA_VERSION`, kept in ``PRAGMA user_version``; :data:`MIGRATIONS` upgrades older
files in place):

- ``runs``: one row per result. ``kind`` ('train' | 'evaluate'), ``name`` (the run directory's name), ``created_at``
  (UTC, ISO 8601), ``status`` ('completed' | 'stopped': a training interrupted on purpose), ``dataset``, ``model``,
  ``objective`` (names from the training config), ``seed`` (the run's own seed: the training seed of a train run,
  the sampling/attack seed of an evaluation), ``config`` (JSON: the ``TrainConfig`` of a train run; ``{"eval":
  EvalConfig, "train": TrainConfig of the checkpoint, "protocol": its protocol description}`` of an evaluation),
  ``code_version`` (package version), ``git_commit`` and ``git_dirty`` (when the package runs from a git checkout,
  else NULL), ``machine`` (JSON: platform, python, torch, cpu count, torch threads, host, CUDA device),
  ``duration_s`` (training time of this call / total evaluation time), ``checkpoint`` and ``checkpoint_sha256``,
  ``results_path`` (the evaluation's JSON file) and ``extra`` (JSON: the training history, or the evaluation's
  timings and dataset split), ``protocol`` (the evaluation's protocol fingerprint, :mod:`..protocol`; NULL for a
  training run. Version 2 added it and recomputed it for the evaluations recorded before). The leaderboard ranks
  within one protocol.
- ``metrics(run_id, name, value)``: the numeric summaries, nested keys joined with dots. An evaluation stores
  its ``summary`` (``natural_acc``, ``pgd_acc``, ``topk``, ``kendall``, ``no_valid``, ``n``,
  ``ifia.topk.median``, ``ifia.kendall.valid_mean``, ...) and ``timings.<phase>``; a training run
  ``test_acc``, ``steps``, ``total_steps`` and the last logged window as ``train.loss``, ``train.acc``, ...
  Values that were not measured are absent (no NULL rows).
- ``example_values(run_id, name, example, value)``: the per-example columns in long form, ``example`` being the
  index in the evaluated split, so one SQL join compares two models sample by sample. Names are the
  ``per_example`` columns of the results (``label``, ``natural_correct``, ``pgd_correct``, ``ifia.topk``,
  ``ifia.kendall``, ``ifia.valid``, ``ifia.step``, ``ifia.flat_start``); booleans are stored as 0/1.

Imports only the standard library and the protocol module (the version 2 migration recomputes fingerprints).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path

from .. import protocol as protocol_lib

KINDS = ("train", "evaluate")
STATUSES = ("completed", "stopped")

# One tuple of statements per schema version; version v is reached by running MIGRATIONS[v - 1] on version v - 1.
# A statement that is a name of :data:`PY_MIGRATIONS` runs that Python step instead of SQL.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE runs (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            kind TEXT NOT NULL CHECK (kind IN ('train', 'evaluate')),
            name TEXT,
            created_at TEXT NOT NULL,
            status TEXT NOT NULL,
            dataset TEXT,
            model TEXT,
            objective TEXT,
            seed INTEGER,
            config TEXT NOT NULL,
            code_version TEXT,
            git_commit TEXT,
            git_dirty INTEGER,
            machine TEXT NOT NULL,
            duration_s REAL,
            checkpoint TEXT,
            checkpoint_sha256 TEXT,
            results_path TEXT,
            extra TEXT
        )""",
        "CREATE INDEX runs_by_dataset ON runs (dataset, kind)",
        """CREATE TABLE metrics (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            value REAL NOT NULL,
            PRIMARY KEY (run_id, name)
        ) WITHOUT ROWID""",
        "CREATE INDEX metrics_by_name ON metrics (name, value)",
        """CREATE TABLE example_values (
            run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            example INTEGER NOT NULL,
            value REAL,
            PRIMARY KEY (run_id, name, example)
        ) WITHOUT ROWID""",
    ),
    (
        "ALTER TABLE runs ADD COLUMN protocol TEXT",
        "CREATE INDEX runs_by_protocol ON runs (dataset, protocol)",
        "backfill_protocols",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def backfill_protocols(conn: sqlite3.Connection) -> None:
    """Version 2: the protocol of every evaluation recorded before fingerprints, recomputed from its stored
    evaluation config, training config and dataset (left NULL when they cannot be read)."""
    rows = conn.execute("SELECT id, config, extra FROM runs WHERE kind = 'evaluate' AND protocol IS NULL").fetchall()
    for run_id, config, extra in rows:
        cfg, more = json.loads(config), json.loads(extra) if extra else {}
        found = protocol_lib.of_results({"eval_config": cfg.get("eval"), "train_config": cfg.get("train"),
                                         "dataset": (more or {}).get("dataset")})  # fmt: skip
        if found is not None:
            cfg["protocol"] = found[0]
            conn.execute("UPDATE runs SET protocol = ?, config = ? WHERE id = ?",
                         (found[1], json.dumps(cfg, allow_nan=False, default=str), run_id))  # fmt: skip


PY_MIGRATIONS: dict[str, Callable[[sqlite3.Connection], None]] = {"backfill_protocols": backfill_protocols}

# friendly leaderboard names -> stored metric names (any stored name is accepted as well)
METRIC_ALIASES: dict[str, str] = {
    "topk": "topk",
    "kendall": "kendall",
    "natural_acc": "natural_acc",
    "pgd_acc": "pgd_acc",
    "no_valid": "no_valid",
    "topk_median": "ifia.topk.median",
    "kendall_median": "ifia.kendall.median",
    "topk_valid": "ifia.topk.valid_mean",
    "kendall_valid": "ifia.kendall.valid_mean",
    "test_acc": "test_acc",
}

RUN_COLUMNS = (
    "id", "kind", "name", "created_at", "status", "dataset", "model", "objective", "seed", "config", "code_version",
    "git_commit", "git_dirty", "machine", "duration_s", "checkpoint", "checkpoint_sha256", "results_path", "extra",
    "protocol",
)  # fmt: skip
JSON_COLUMNS = ("config", "machine", "extra")

SQLITE_HEADER = b"SQLite format 3\x00"


def check_sqlite_file(path: Path) -> None:
    """Refuse a non-empty file that is not an SQLite database (SQLite itself would take a short one for an empty
    database and write its tables into it)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as f:
        head = f.read(len(SQLITE_HEADER))
    if head != SQLITE_HEADER:
        raise ValueError(f"{path}: not a readable SQLite results database (expected the SQLite header, got {head!r})")
