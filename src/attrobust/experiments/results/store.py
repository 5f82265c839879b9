"""The results database: every training run and evaluation, queryable with SQL (SQLite, standard library).

Where: ``--db PATH`` (or the ``db`` argument) first, then the ``ATTROBUST_DB`` environment variable, then
``<runs root>/attrobust.db`` beside the run directories (``runs/attrobust.db`` for the default ``out_dir``).
:func:`~attrobust.experiments.train.train` records into ``<config.out_dir>/attrobust.db`` and
:func:`~attrobust.experiments.evaluate.evaluate` of a checkpoint ``<root>/<name>/model.pt`` into
``<root>/attrobust.db`` (a checkpoint outside a run directory: beside it); an in-memory model is recorded only
into an explicit database (argument or variable). Both record through :mod:`..pipeline`.

The tables and their migrations are described in :mod:`.schema`.

Every write is one ``BEGIN IMMEDIATE`` transaction on a WAL-mode database with a busy timeout, so concurrent
writers (several processes training or evaluating at once) wait for each other instead of losing rows.

Imports the schema, the config (a training run's config), the protocol (fingerprints), provenance (what
produced a result) and the summaries' number cleaning; never the training or the evaluation.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._checks import check_choice, check_int
from .. import protocol as protocol_lib
from ..config import TrainConfig, to_dict
from ..provenance import code_version, file_sha256, machine_info
from ..summaries import finite_or_none
from .schema import (
    JSON_COLUMNS,
    KINDS,
    METRIC_ALIASES,
    MIGRATIONS,
    PY_MIGRATIONS,
    RUN_COLUMNS,
    SCHEMA_VERSION,
    STATUSES,
    check_sqlite_file,
)

DB_ENV = "ATTROBUST_DB"
DB_FILENAME = "attrobust.db"

# --------------------------------------------------------------------------------------------------------------
# where the database lives, what a row holds


def resolve_db_path(db: str | Path | bool | None = None, root: str | Path | None = "runs") -> Path | None:
    """The database file: ``db`` if a path, else ``$ATTROBUST_DB``, else ``<root>/attrobust.db``.

    ``db=False`` means "do not record" and gives None, as does ``root=None`` when neither ``db`` nor the
    environment variable names a file; ``db=True`` or None follows the defaults.
    """
    if db is False:
        return None
    if isinstance(db, str | os.PathLike):
        return Path(db)
    if db is not None and db is not True:
        raise ValueError(f"db: expected a path, True, False or None, got {type(db).__name__}")
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env)
    return None if root is None else Path(root) / DB_FILENAME


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return finite_or_none(value)
    raise ValueError(f"{name}: expected a number, a bool or None, got {value!r}")


def flatten_metrics(values: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Numbers of a nested mapping keyed by dotted paths (bools as 0/1); None, NaN and inf are left out."""
    out: dict[str, float] = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            out.update(flatten_metrics(value, f"{prefix}{key}."))
        elif (number := _number(value, f"metrics.{prefix}{key}")) is not None:
            out[prefix + str(key)] = number
    return out


def flatten_examples(
    columns: Mapping[str, Any], prefix: str = "", index: Sequence[int] | None = None
) -> Iterator[tuple[str, int, float | None]]:
    """``(name, example, value)`` of per-example columns: a mapping of equally long lists, whose ``index`` list
    (when present, else the inherited one, else positions) holds each entry's example id; nested mappings
    (e.g. ``ifia``) carry their own ``index``; None columns are skipped; an entry that is itself a list (a
    per-example curve such as ROAD's) gives one value per point, named ``<column>[j]``."""
    index = columns.get("index", index)
    for key, col in columns.items():
        name = prefix + str(key)
        if key == "index" or col is None:
            continue
        if isinstance(col, Mapping):
            yield from flatten_examples(col, name + ".", index)
            continue
        if not isinstance(col, list | tuple):
            raise ValueError(f"per_example.{name}: expected a list of values or a mapping, got {type(col).__name__}")
        ids = range(len(col)) if index is None else index
        if len(ids) != len(col):
            raise ValueError(f"per_example.{name}: expected {len(ids)} values (one per index), got {len(col)}")
        for example, value in zip(ids, col, strict=True):
            if isinstance(value, list | tuple):  # a per-example curve (ROAD, SSIM under noise): one row per point
                for j, point in enumerate(value):
                    yield f"{name}[{j}]", int(example), _number(point, f"per_example.{name}[{j}]")
                continue
            yield name, int(example), _number(value, f"per_example.{name}")



# --------------------------------------------------------------------------------------------------------------
# the store


class Store:
    """An open results database (see the module docstring); use :func:`open_store`, ideally as a context
    manager. Reads see every committed write of other processes."""

    def __init__(self, path: str | Path, *, create: bool = True, timeout: float = 60.0) -> None:
        self.path = Path(path)
        if not create and not self.path.is_file():
            raise FileNotFoundError(
                f"no results database at {self.path}: train or evaluate a model first, or pass --db PATH "
                f"(or set {DB_ENV})"
            )
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        check_sqlite_file(self.path)
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self._conn.execute("PRAGMA foreign_keys = ON")
            mode = self._wal_mode(timeout)
            if str(mode).lower() != "wal":
                raise ValueError(f"{self.path}: expected journal mode 'wal', got {mode!r}")
            self._migrate()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise ValueError(f"{self.path}: not a readable SQLite results database ({err})") from None
        except BaseException:
            self._conn.close()
            raise

    def _wal_mode(self, timeout: float) -> str:
        """Switch to WAL and return the journal mode. Two processes creating one database at once can get "database
        is locked" here at once (the busy timeout does not cover this lock), so it is retried until ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                return str(self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    # -- plumbing

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: takes the write lock at once (waiting up to the busy timeout)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        """``PRAGMA user_version`` of the file."""
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    def _migrate(self) -> None:
        if self.schema_version == SCHEMA_VERSION:
            return
        with self._write() as conn:  # re-read under the lock: another process may have just created it
            version = self.schema_version
            if version > SCHEMA_VERSION:
                raise ValueError(
                    f"{self.path}: expected schema version <= {SCHEMA_VERSION}, got {version} "
                    "(written by a newer attrobust)"
                )
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            if version == 0 and tables:
                raise ValueError(
                    f"{self.path}: expected an attrobust results database, got an SQLite file with tables "
                    f"{', '.join(sorted(tables))}"
                )
            for statements in MIGRATIONS[version:]:
                for statement in statements:
                    if statement in PY_MIGRATIONS:
                        PY_MIGRATIONS[statement](conn)
                    else:
                        conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _insert(
        self,
        row: dict[str, Any],
        metrics: Mapping[str, float],
        examples: Iterator[tuple[str, int, float | None]] | None = None,
    ) -> int:
        code, device = code_version(), row.pop("device", None)
        row = {
            "created_at": _now(), "code_version": code["version"], "git_commit": code["git_commit"],
            "git_dirty": code["git_dirty"], "machine": machine_info(device), **row,
        }  # fmt: skip
        for key in JSON_COLUMNS:
            if row.get(key) is not None:
                row[key] = json.dumps(row[key], allow_nan=False, default=str)
        examples_rows = list(examples) if examples is not None else []
        with self._write() as conn:
            cur = conn.execute(
                f"INSERT INTO runs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())
            )
            run_id = int(cur.lastrowid)
            conn.executemany(
                "INSERT INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                [(run_id, k, v) for k, v in metrics.items()],
            )
            conn.executemany(
                "INSERT INTO example_values (run_id, name, example, value) VALUES (?, ?, ?, ?)",
                [(run_id, *r) for r in examples_rows],
            )
        return run_id

    # -- writing

    def record_train(
        self,
        config: TrainConfig | Mapping[str, Any],
        *,
        status: str = "completed",
        duration_s: float | None = None,
        checkpoint: str | Path | None = None,
        metrics: Mapping[str, Any] | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
    ) -> int:
        """Record a training run and return its id.

        Args:
            config: the run's ``TrainConfig`` (or its dict); gives name, dataset, model, objective, seed, device.
            status: 'completed' or 'stopped' (interrupted on purpose, no final model).
            duration_s: training seconds of this call.
            checkpoint: the final ``model.pt`` (its sha256 is stored when the file exists).
            metrics: numeric results, nested mappings allowed (e.g. ``{"test_acc": 0.9, "train": {"loss": 0.1}}``).
            history: the logged training windows (stored in ``extra``).
        """
        cfg = to_dict(config) if isinstance(config, TrainConfig) else dict(config)
        check_choice(status, "status", STATUSES)
        ckpt = Path(checkpoint) if checkpoint is not None else None
        row = {
            "kind": "train", "name": cfg.get("name"), "status": status,
            "dataset": (cfg.get("data") or {}).get("name"), "model": (cfg.get("model") or {}).get("name"),
            "objective": (cfg.get("objective") or {}).get("name"), "seed": cfg.get("seed"), "config": cfg,
            "duration_s": _number(duration_s, "duration_s"),
            "checkpoint": str(ckpt) if ckpt is not None else None,
            "checkpoint_sha256": file_sha256(ckpt) if ckpt is not None and ckpt.is_file() else None,
            "extra": {"history": list(history or [])}, "device": cfg.get("device"),
        }  # fmt: skip
        return self._insert(row, flatten_metrics(metrics or {}))

    def record_evaluation(self, results: Mapping[str, Any], *, name: str | None = None) -> int:
        """Record the result dict of :func:`~attrobust.experiments.evaluate.evaluate` and return its id.

        ``summary`` and ``timings`` go to ``metrics``, ``per_example`` to ``example_values``; ``name`` defaults
        to the checkpoint's run directory (else the checkpoint's training run name).
        """
        for key in ("summary", "eval_config"):
            if not isinstance(results.get(key), Mapping):
                raise ValueError(f"results: expected an evaluate() result with a {key!r} mapping, got {results!r:.80}")
        train_cfg = results.get("train_config") or {}
        eval_cfg = dict(results["eval_config"])
        checkpoint = results.get("checkpoint")
        if name is None:
            name = Path(checkpoint).parent.name if checkpoint else train_cfg.get("name")
        dataset = results.get("dataset") or {}
        found = protocol_lib.of_results(results)
        row = {
            "kind": "evaluate", "name": name or None, "status": "completed",
            "dataset": dataset.get("name") or eval_cfg.get("dataset") or (train_cfg.get("data") or {}).get("name"),
            "model": (train_cfg.get("model") or {}).get("name"),
            "objective": (train_cfg.get("objective") or {}).get("name"), "seed": eval_cfg.get("seed"),
            "config": {"eval": eval_cfg, "train": results.get("train_config"),
                       "protocol": found[0] if found else None},
            "protocol": found[1] if found else None,
            "duration_s": _number((results.get("timings") or {}).get("total"), "timings.total"),
            "checkpoint": checkpoint, "checkpoint_sha256": results.get("checkpoint_sha256"),
            "results_path": results.get("path"),
            "extra": {"dataset": dataset, "timings": results.get("timings"), "created": results.get("created")},
            "device": eval_cfg.get("device"),
        }  # fmt: skip
        metrics = {**flatten_metrics(results["summary"]), **flatten_metrics(results.get("timings") or {}, "timings.")}
        return self._insert(row, metrics, flatten_examples(results.get("per_example") or {}))

    # -- reading

    def _row(self, values: Sequence[Any]) -> dict[str, Any]:
        row = dict(zip(RUN_COLUMNS, values, strict=True))
        for key in JSON_COLUMNS:
            row[key] = json.loads(row[key]) if row[key] is not None else None
        row["git_dirty"] = None if row["git_dirty"] is None else bool(row["git_dirty"])
        return row

    def runs(
        self, kind: str | None = None, dataset: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Recorded runs, newest first, each a dict of the ``runs`` columns (JSON decoded) plus ``metrics``
        (name -> value); filtered by ``kind`` ('train' | 'evaluate') and ``dataset``, at most ``limit``."""
        where, params = self._filters(kind, dataset)
        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs {where} ORDER BY id DESC"
        if limit is not None:
            sql += f" LIMIT {check_int(limit, 'limit', 1)}"
        rows = [self._row(r) for r in self._conn.execute(sql, params)]
        by_id = {r["id"]: r for r in rows}
        for r in rows:
            r["metrics"] = {}
        if rows:
            ids = f"SELECT id FROM ({sql})"
            for run_id, name, value in self._conn.execute(
                f"SELECT run_id, name, value FROM metrics WHERE run_id IN ({ids}) ORDER BY run_id, name", params
            ):
                by_id[run_id]["metrics"][name] = value
        return rows

    @staticmethod
    def _filters(kind: str | None, dataset: str | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if kind is not None:
            clauses.append("kind = ?")
            params.append(check_choice(kind, "kind", KINDS))
        if dataset is not None:
            clauses.append("dataset = ?")
            params.append(dataset)
        return ("WHERE " + " AND ".join(clauses)) if clauses else "", params

    def run(self, run_id: int) -> dict[str, Any]:
        """One run by id (as in :meth:`runs`); an unknown id raises ``ValueError``."""
        found = self._conn.execute(f"SELECT {', '.join(RUN_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
        if found is None:
            raise ValueError(f"run_id: expected the id of a recorded run, got {run_id!r}")
        row = self._row(found)
        row["metrics"] = dict(self._conn.execute("SELECT name, value FROM metrics WHERE run_id = ?", (run_id,)))
        return row

    def example_values(self, run_id: int) -> dict[str, dict[int, float | None]]:
        """Per-example values of a run: ``{name: {example index: value}}`` (empty for a training run)."""
        out: dict[str, dict[int, float | None]] = {}
        for name, example, value in self._conn.execute(
            "SELECT name, example, value FROM example_values WHERE run_id = ? ORDER BY name, example", (run_id,)
        ):
            out.setdefault(name, {})[example] = value
        return out

    def metric_names(self, dataset: str | None = None) -> list[str]:
        """Stored metric names (of ``dataset``'s runs when given), sorted."""
        sql = "SELECT DISTINCT m.name FROM metrics m JOIN runs r ON r.id = m.run_id"
        params: tuple[Any, ...] = ()
        if dataset is not None:
            sql, params = sql + " WHERE r.dataset = ?", (dataset,)
        return sorted(r[0] for r in self._conn.execute(sql, params))

    def resolve_metric(self, metric: str) -> str:
        """Stored name of ``metric`` (a :data:`METRIC_ALIASES` key or any stored name); unknown ones raise
        ``ValueError`` listing the available names."""
        if metric in METRIC_ALIASES:
            return METRIC_ALIASES[metric]
        stored = self.metric_names()
        if metric in stored:
            return metric
        available = sorted(set(METRIC_ALIASES) | set(stored))
        raise ValueError(f"metric: expected one of {', '.join(available)}, got {metric!r}")

    def protocols(self, dataset: str, metric: str = "topk") -> list[dict[str, Any]]:
        """The protocols of ``dataset``'s completed runs that measured ``metric``, most models first (then the
        most recent): dicts of ``fingerprint`` (None for training runs and evaluations whose protocol is
        unknown), ``models``, ``runs``, ``newest`` (its latest run id) and ``protocol`` (the description stored
        with that run, or None)."""
        stored = self.resolve_metric(metric)
        sql = """
            SELECT r.protocol, COUNT(DISTINCT r.kind || ':' || COALESCE(r.checkpoint_sha256, r.name, r.id)),
                   COUNT(*), MAX(r.id)
            FROM runs r JOIN metrics m ON m.run_id = r.id AND m.name = ?
            WHERE r.dataset = ? AND r.status = 'completed'
            GROUP BY r.protocol ORDER BY 2 DESC, 4 DESC"""
        out = []
        for fp, models, runs, newest in self._conn.execute(sql, (stored, dataset)).fetchall():
            config = json.loads(self._conn.execute("SELECT config FROM runs WHERE id = ?", (newest,)).fetchone()[0])
            described = config.get("protocol") if isinstance(config, dict) and "eval" in config else None
            out.append({"fingerprint": fp, "models": models, "runs": runs, "newest": newest, "protocol": described})
        return out

    def select_protocol(self, dataset: str, metric: str = "topk", protocol: str | None = None) -> dict[str, Any] | None:
        """One entry of :meth:`protocols`: the one whose fingerprint starts with ``protocol`` (``"none"``: the
        runs without one), or, when ``protocol`` is None, the first (most models). None when nothing measured
        ``metric``; an unknown or ambiguous ``protocol`` raises ``ValueError`` listing the fingerprints."""
        available = self.protocols(dataset, metric)
        if not available or protocol is None:
            return available[0] if available else None
        found = [p for p in available if (p["fingerprint"] or "none").startswith(protocol.strip().lower())]
        if len(found) != 1:
            names = ", ".join(p["fingerprint"] or "none" for p in available)
            what = "ambiguous" if found else "unknown"
            raise ValueError(f"protocol: {what} {protocol!r} for {dataset} {metric}; expected one of: {names}")
        return found[0]

    def leaderboard(
        self,
        dataset: str,
        metric: str = "topk",
        descending: bool = True,
        limit: int | None = None,
        protocol: str | None = None,
    ) -> list[dict[str, Any]]:
        """Models of ``dataset`` ranked by ``metric`` within one evaluation protocol: one row per model
        (checkpoint sha256, else run name) and kind, from its most recent completed run of that protocol that
        measured the metric. ``protocol`` is a fingerprint or a unique prefix of one (see
        :meth:`select_protocol`; default: the protocol with the most models). Results of different protocols are
        never ranked together.

        Rows: ``rank``, ``run_id``, ``kind``, ``name``, ``model``, ``objective``, ``train_seed`` (the model's
        training seed), ``metric`` (the stored name), ``value``, ``n`` (evaluated samples, if recorded),
        ``created_at``, ``checkpoint_sha256``, ``protocol`` (the fingerprint). Ties keep the newer run first.
        """
        chosen = self.select_protocol(dataset, metric, protocol)
        if chosen is None:
            return []
        stored = self.resolve_metric(metric)
        order = "DESC" if descending else "ASC"
        sql = f"""
            SELECT b.id, b.kind, b.name, b.model, b.objective, b.config, b.value, b.created_at,
                   b.checkpoint_sha256, (SELECT c.value FROM metrics c WHERE c.run_id = b.id AND c.name = 'n')
            FROM (
                SELECT r.*, m.value, ROW_NUMBER() OVER (
                    PARTITION BY r.kind, COALESCE(r.checkpoint_sha256, r.name, r.id)
                    ORDER BY r.id DESC) AS newest
                FROM runs r JOIN metrics m ON m.run_id = r.id AND m.name = ?
                WHERE r.dataset = ? AND r.status = 'completed' AND r.protocol IS ?
            ) b
            WHERE b.newest = 1 ORDER BY b.value {order}, b.id DESC"""
        if limit is not None:
            sql += f" LIMIT {check_int(limit, 'limit', 1)}"
        out = []
        for rank, r in enumerate(self._conn.execute(sql, (stored, dataset, chosen["fingerprint"])), start=1):
            run_id, kind, name, model, objective, config, value, created, sha, n = r
            cfg = json.loads(config)
            seed = cfg.get("seed") if kind == "train" else (cfg.get("train") or {}).get("seed")
            out.append({
                "rank": rank, "run_id": run_id, "kind": kind, "name": name, "model": model, "objective": objective,
                "train_seed": seed, "metric": stored, "value": value, "n": None if n is None else int(n),
                "created_at": created, "checkpoint_sha256": sha, "protocol": chosen["fingerprint"],
            })  # fmt: skip
        return out


def open_store(path: str | Path | None = None, *, create: bool = True, timeout: float = 60.0) -> Store:
    """Open (and create or migrate) the results database at ``path`` (default: ``$ATTROBUST_DB``, else
    ``runs/attrobust.db``); ``create=False`` raises ``FileNotFoundError`` for a missing file; ``timeout`` is
    how long a writer waits for another one (seconds)."""
    return Store(resolve_db_path(path), create=create, timeout=timeout)

