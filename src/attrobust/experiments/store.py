"""The results database: every training run and evaluation, queryable with SQL (SQLite, standard library).

Where: ``--db PATH`` (or the ``db`` argument) first, then the ``ATTROBUST_DB`` environment variable, then
``<runs root>/attrobust.db`` beside the run directories (``runs/attrobust.db`` for the default ``out_dir``).
:func:`~attrobust.experiments.train.train` records into ``<config.out_dir>/attrobust.db`` and
:func:`~attrobust.experiments.evaluate.evaluate` of a checkpoint ``<root>/<name>/model.pt`` into
``<root>/attrobust.db`` (a checkpoint outside a run directory: beside it); an in-memory model is recorded only
into an explicit database (argument or variable).

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
  timings and dataset split), ``protocol`` (the evaluation's protocol fingerprint, :mod:`.protocol`; NULL for a
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
  ``ifia.kendall``, ``ifia.valid``, ``ifia.step``); booleans are stored as 0/1.

Every write is one ``BEGIN IMMEDIATE`` transaction on a WAL-mode database with a busy timeout, so concurrent
writers (several processes training or evaluating at once) wait for each other instead of losing rows.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import json
import math
import os
import platform
import sqlite3
import subprocess
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from .._checks import check_choice, check_int
from . import protocol as protocol_lib
from .config import TrainConfig, to_dict
from .evaluate import file_sha256

if TYPE_CHECKING:
    from .train import TrainResult

DB_ENV = "ATTROBUST_DB"
DB_FILENAME = "attrobust.db"
KINDS = ("train", "evaluate")
STATUSES = ("completed", "stopped")

# One tuple of statements per schema version; version v is reached by running MIGRATIONS[v - 1] on version v - 1.
# A statement that is a name of :data:`_PY_MIGRATIONS` runs that Python step instead of SQL.
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


def _backfill_protocols(conn: sqlite3.Connection) -> None:
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


_PY_MIGRATIONS: dict[str, Callable[[sqlite3.Connection], None]] = {"backfill_protocols": _backfill_protocols}

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

_RUN_COLUMNS = (
    "id", "kind", "name", "created_at", "status", "dataset", "model", "objective", "seed", "config", "code_version",
    "git_commit", "git_dirty", "machine", "duration_s", "checkpoint", "checkpoint_sha256", "results_path", "extra",
    "protocol",
)  # fmt: skip
_JSON_COLUMNS = ("config", "machine", "extra")


# --------------------------------------------------------------------------------------------------------------
# where the database lives, what produced a result


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


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(package_dir: str | Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``package_dir`` as ``<top>/src/<package>``, else
    ``(None, None)`` (an installed package, no git, any git error). Read-only git commands."""
    package_dir = Path(package_dir).resolve()
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0 or not top.stdout.strip():
        return None, None
    if (Path(top.stdout.strip()) / "src" / package_dir.name).resolve() != package_dir:
        return None, None  # a package installed inside somebody else's repository
    head = _git(package_dir, "rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return None, None
    diff = _git(package_dir, "diff", "--quiet", "HEAD", "--")
    dirty = None if diff is None or diff.returncode not in (0, 1) else diff.returncode == 1
    return head.stdout.strip(), dirty


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"version": package version, "git_commit": str | None, "git_dirty": bool | None}`` of this process."""
    commit, dirty = git_state(Path(__file__).resolve().parents[1])
    return {"version": __version__, "git_commit": commit, "git_dirty": dirty}


@functools.lru_cache(maxsize=8)
def machine_info(device: str | None = None) -> dict[str, Any]:
    """Platform, python, torch version, cpu count, torch threads, host name and the CUDA device's name (when
    ``device`` is a CUDA device, or CUDA is available and ``device`` is None)."""
    import torch

    cuda = None
    dev = str(device) if device is not None else None
    with contextlib.suppress(Exception):  # a broken driver must not lose the result
        if torch.cuda.is_available() and (dev is None or dev.startswith("cuda")):
            cuda = torch.cuda.get_device_name(torch.device(dev) if dev else None)
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
        "device": dev,
        "cuda_device": cuda,
    }


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def _number(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        value = float(value)
        return value if math.isfinite(value) else None
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
    (e.g. ``ifia``) carry their own ``index``; None columns are skipped."""
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
        # autocommit mode: transactions are explicit (BEGIN IMMEDIATE ... COMMIT)
        self._conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        try:
            self._conn.execute("PRAGMA foreign_keys = ON")
            mode = self._conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ValueError(f"{self.path}: expected journal mode 'wal', got {mode!r}")
            self._migrate()
        except sqlite3.DatabaseError as err:
            self._conn.close()
            raise ValueError(f"{self.path}: not a readable SQLite results database ({err})") from None
        except BaseException:
            self._conn.close()
            raise

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
                    if statement in _PY_MIGRATIONS:
                        _PY_MIGRATIONS[statement](conn)
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
        for key in _JSON_COLUMNS:
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
        row = dict(zip(_RUN_COLUMNS, values, strict=True))
        for key in _JSON_COLUMNS:
            row[key] = json.loads(row[key]) if row[key] is not None else None
        row["git_dirty"] = None if row["git_dirty"] is None else bool(row["git_dirty"])
        return row

    def runs(
        self, kind: str | None = None, dataset: str | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Recorded runs, newest first, each a dict of the ``runs`` columns (JSON decoded) plus ``metrics``
        (name -> value); filtered by ``kind`` ('train' | 'evaluate') and ``dataset``, at most ``limit``."""
        where, params = self._filters(kind, dataset)
        sql = f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs {where} ORDER BY id DESC"
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
        found = self._conn.execute(f"SELECT {', '.join(_RUN_COLUMNS)} FROM runs WHERE id = ?", (run_id,)).fetchone()
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


# --------------------------------------------------------------------------------------------------------------
# hooks of train() and evaluate(): a database problem never loses the run itself (it warns)


def _record_quietly(path: Path | None, write: Callable[[Store], int]) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        with open_store(path) as store:
            return {"path": str(path), "run_id": write(store)}
    except (sqlite3.Error, OSError, ValueError) as err:
        warnings.warn(f"results database {path}: the result was not recorded ({err})", RuntimeWarning, stacklevel=3)
        return None


def record_train_result(result: TrainResult, db: str | Path | bool | None = None) -> dict[str, Any] | None:
    """Record a :class:`~attrobust.experiments.train.TrainResult` that trained (not a reused one) into
    :func:`resolve_db_path` ``(db, config.out_dir)``; returns ``{"path", "run_id"}`` or None."""
    if result.reused:
        return None
    last = {k: v for k, v in (result.history[-1] if result.history else {}).items() if k not in ("step", "epoch")}
    metrics = {"test_acc": result.test_acc, "steps": result.step, "total_steps": result.total_steps, "train": last}
    status = "completed" if result.completed else "stopped"

    def write(store: Store) -> int:
        return store.record_train(
            result.config, status=status, duration_s=result.seconds, checkpoint=result.model_path, metrics=metrics,
            history=result.history,
        )  # fmt: skip

    return _record_quietly(resolve_db_path(db, result.config.out_dir), write)


def record_evaluation_result(
    results: Mapping[str, Any], db: str | Path | bool | None = None, checkpoint: str | Path | None = None
) -> dict[str, Any] | None:
    """Record an :func:`~attrobust.experiments.evaluate.evaluate` result into :func:`resolve_db_path`
    ``(db, root)``: ``root`` is the runs root ``<root>/<name>/model.pt`` of a run directory written by ``train``
    (it holds ``config.yaml``), else the checkpoint's own directory; an in-memory model (``checkpoint=None``)
    is recorded only into an explicit database. Returns ``{"path", "run_id"}`` or None."""
    root = None
    if checkpoint is not None:
        run_dir = Path(checkpoint).resolve().parent
        root = run_dir.parent if (run_dir / "config.yaml").is_file() else run_dir
    return _record_quietly(resolve_db_path(db, root), lambda store: store.record_evaluation(results))


# --------------------------------------------------------------------------------------------------------------
# plain-text tables for the command line


def text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned plain-text table: header, rule, one line per row."""
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("-+-".join("-" * w for w in widths))
    lines += [" | ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_LISTED_METRICS = ("natural_acc", "pgd_acc", "topk", "kendall", "test_acc", "train.loss")


def format_runs(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table of :meth:`Store.runs` rows printed by ``attrobust runs``."""
    columns = ("id", "kind", "created (UTC)", "name", "dataset", "model", "objective", "seed", "status", "seconds",
               "metrics")  # fmt: skip
    body = []
    for r in rows:
        metrics = " ".join(f"{k}={r['metrics'][k]:.4f}" for k in _LISTED_METRICS if k in r.get("metrics", {}))
        body.append([
            str(r["id"]), r["kind"], str(r["created_at"])[:19].replace("T", " "), _fmt(r["name"]), _fmt(r["dataset"]),
            _fmt(r["model"]), _fmt(r["objective"]), _fmt(r["seed"]), r["status"], _fmt(r["duration_s"], 1),
            metrics or "-",
        ])  # fmt: skip
    return text_table(columns, body)


def format_leaderboard(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table of :meth:`Store.leaderboard` rows printed by ``attrobust leaderboard``."""
    metric = rows[0]["metric"] if rows else "value"
    columns = ("rank", metric, "name", "model", "objective", "seed", "kind", "n", "created (UTC)", "run")
    body = [
        [str(r["rank"]), _fmt(r["value"]), _fmt(r["name"]), _fmt(r["model"]), _fmt(r["objective"]),
         _fmt(r["train_seed"]), r["kind"], _fmt(r["n"]), str(r["created_at"])[:19].replace("T", " "), str(r["run_id"])]
        for r in rows
    ]  # fmt: skip
    return text_table(columns, body)
