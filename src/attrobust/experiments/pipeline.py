"""The path of a result once the work is done: :func:`~.train.train` and :func:`~.evaluate.evaluate` compute,
then hand their result here; it goes to the results file (an evaluation's JSON) and into the results database.
So the trainer and the evaluation never import the store, and this module is the one place that knows where a
result goes.

A database problem never loses the run itself: it warns and the result is returned without a ``db`` entry.

Imports the results store and the training result's type (:mod:`.checkpointing`); never the trainer or the
evaluation.
"""

from __future__ import annotations

import json
import sqlite3
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .._files import atomic_write_text
from .checkpointing import TrainResult
from .results.store import Store, open_store, resolve_db_path


def write_results(results: Mapping[str, Any], out: str | Path) -> Path:
    """Write an evaluation's results as JSON (no NaN: clean them first) atomically to ``out``; returns the path."""
    return atomic_write_text(out, json.dumps(results, indent=1, allow_nan=False))


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
    """Record a :class:`~.checkpointing.TrainResult` that trained (not a reused one) into
    :func:`~.results.store.resolve_db_path` ``(db, config.out_dir)``; returns ``{"path", "run_id"}`` or None."""
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
    """Record an :func:`~.evaluate.evaluate` result into :func:`~.results.store.resolve_db_path` ``(db, root)``:
    ``root`` is the runs root ``<root>/<name>/model.pt`` of a run directory written by ``train`` (it holds
    ``config.yaml``), else the checkpoint's own directory; an in-memory model (``checkpoint=None``) is recorded
    only into an explicit database. Returns ``{"path", "run_id"}`` or None."""
    root = None
    if checkpoint is not None:
        run_dir = Path(checkpoint).resolve().parent
        root = run_dir.parent if (run_dir / "config.yaml").is_file() else run_dir
    return _record_quietly(resolve_db_path(db, root), lambda store: store.record_evaluation(results))


def publish_evaluation(
    results: dict[str, Any], out: str | Path | None, db: str | Path | bool | None, checkpoint: Path | None
) -> dict[str, Any]:
    """Write ``results`` to ``out`` (when given; adds ``path``) and record them (adds ``db`` when recorded)."""
    if out is not None:
        results["path"] = str(write_results(results, out))
    if (recorded := record_evaluation_result(results, db, checkpoint)) is not None:
        results["db"] = recorded
    return results
