"""The results database: schema, round trips, listing, leaderboard, concurrent writers, hooks and CLI commands."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import platform
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

import attrobust
from attrobust.cli import app
from attrobust.experiments import protocol as protocol_lib
from attrobust.experiments.config import EvalConfig, TrainConfig, from_dict
from attrobust.experiments.evaluate import evaluate
from attrobust.experiments.pipeline import record_evaluation_result
from attrobust.experiments.provenance import code_version, git_revision, git_state, machine_info
from attrobust.experiments.results.schema import METRIC_ALIASES, SCHEMA_VERSION
from attrobust.experiments.results.store import flatten_examples, flatten_metrics, open_store, resolve_db_path
from attrobust.experiments.train import train

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()

TINY_TRAIN = {
    "name": "tiny",
    "data": {"name": "synthetic", "kwargs": {"n": 64, "size": 8, "num_classes": 3, "noise": 0.6}, "test_subset": 32},
    "model": {"name": "small_cnn"},
    "optim": {"lr": 1e-2},
    "steps": 4,
    "batch_size": 16,
}
FAST_EVAL = {
    "n": 12,
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
    "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
}


@pytest.fixture(autouse=True)
def _no_env_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATTROBUST_DB", raising=False)


PGD_AT_SMALL_CNN = {"model": {"name": "small_cnn"}, "objective": {"name": "pgd_at"}}
ACCURACIES = {"natural_acc": 0.75, "pgd_acc": None, "kendall": 0.25, "no_valid": 1}


def fake_results(
    name: str, dataset: str = "mnist", topk: float | None = 0.5, seed: int = 0, n: int = 4
) -> dict[str, Any]:
    """An evaluate()-shaped result: n samples, IFIA on the first n - 1 (one of them without valid perturbation)."""
    index = list(range(10, 10 + n))
    return {
        "checkpoint": f"/runs/{name}/model.pt",
        "checkpoint_sha256": hashlib.sha256(name.encode()).hexdigest(),
        "dataset": {"name": dataset, "split": "test", "size": 100},
        "eval_config": {"n": n, "seed": 0, "device": "cpu", "ifia": {"k": 8}},
        "train_config": {"name": name, "seed": seed, "data": {"name": dataset}, **PGD_AT_SMALL_CNN},
        "summary": {
            **ACCURACIES,
            "n": n,
            "topk": topk,
            "ifia": {"attacked": n - 1, "no_valid": 1, "topk": {"mean": topk, "median": 0.5, "valid_mean": None}},
        },
        "per_example": {
            "index": index,
            "label": [i % 3 for i in index],
            "natural_correct": [True] * (n - 1) + [False],
            "pgd_correct": None,
            "ifia": {
                "index": index[:-1],
                "topk": [0.25 * (i % 4) for i in range(n - 1)],
                "valid": [i != 0 for i in range(n - 1)],
                "step": list(range(n - 1)),
            },
        },
        "timings": {"natural": 0.5, "ifia": 1.0, "total": 2.0},
        "created": "2026-01-01T00:00:00+00:00",
    }


# ---------------------------------------------------------------------------------------------- schema, files


def test_schema_version_tables_and_wal(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "r.db"
    with open_store(path) as store:
        assert store.schema_version == SCHEMA_VERSION >= 1
        assert store._conn.execute("PRAGMA busy_timeout").fetchone()[0] == 60_000
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "metrics", "example_values"} <= tables
    conn.close()
    with open_store(path, create=False) as store:  # re-opening keeps the schema and the data
        store.record_evaluation(fake_results("a"))
    with open_store(path, create=False) as store:
        assert len(store.runs()) == 1 and store.schema_version == SCHEMA_VERSION


def test_bad_files_raise(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no results database at .*missing\.db"):
        open_store(tmp_path / "missing.db", create=False)
    assert not (tmp_path / "missing.db").exists()
    newer = tmp_path / "newer.db"
    with open_store(newer):
        pass
    conn = sqlite3.connect(newer)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ValueError, match=f"expected schema version <= {SCHEMA_VERSION}, got {SCHEMA_VERSION + 1}"):
        open_store(newer)
    foreign = tmp_path / "foreign.db"
    conn = sqlite3.connect(foreign)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.close()
    with pytest.raises(ValueError, match=r"expected an attrobust results database, got .* tables songs"):
        open_store(foreign)
    text = tmp_path / "notes.db"
    text.write_text("not a database, just some text that is long enough to have a header" * 20)
    with pytest.raises(ValueError, match="not a readable SQLite results database"):
        open_store(text)


def test_db_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_db_path() == Path("runs") / "attrobust.db"
    assert resolve_db_path(None, tmp_path) == tmp_path / "attrobust.db"
    assert resolve_db_path(None, None) is None and resolve_db_path(True, None) is None
    assert resolve_db_path(False, tmp_path) is None
    assert resolve_db_path(str(tmp_path / "x.db"), "runs") == tmp_path / "x.db"
    monkeypatch.setenv("ATTROBUST_DB", str(tmp_path / "env.db"))
    assert resolve_db_path(None, tmp_path) == tmp_path / "env.db" == resolve_db_path(None, None)
    assert resolve_db_path(tmp_path / "x.db") == tmp_path / "x.db"
    assert resolve_db_path(False) is None
    with pytest.raises(ValueError, match="db: expected a path, True, False or None, got int"):
        resolve_db_path(3)  # type: ignore[arg-type]


def test_code_version_and_machine() -> None:
    code_version.cache_clear()  # the process may have started at an earlier commit
    code = code_version()
    assert code["version"] == attrobust.__version__
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=False)
    in_checkout = head.returncode == 0 and (REPO / "src" / "attrobust").resolve() == Path(attrobust.__file__).parent
    assert code["git_commit"] == (head.stdout.strip() if in_checkout else None)
    assert isinstance(code["git_dirty"], bool) if in_checkout else code["git_dirty"] is None
    revision = git_revision()  # the report's one-string form of the same probe
    assert revision is None if not in_checkout else revision.split()[0] == code["git_commit"]
    assert revision is None or revision.endswith(" (modified)") == bool(code["git_dirty"])
    info = machine_info("cpu")
    assert info["python"] == platform.python_version() and info["torch"] == torch.__version__
    assert info["cpu_count"] == os.cpu_count() and info["device"] == "cpu"
    if not torch.cuda.is_available():
        assert info["cuda_device"] is None


def test_git_state_never_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert git_state(tmp_path) == (None, None)  # not a checkout
    assert git_state(tmp_path / "does-not-exist") == (None, None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable at all
    assert git_state(REPO / "src" / "attrobust") == (None, None)


# ------------------------------------------------------------------------------------------------ round trips


def test_flatteners() -> None:
    assert flatten_metrics({"a": 1, "b": {"c": True, "d": None, "e": float("nan")}, "f": 2.5}) == {
        "a": 1.0, "b.c": 1.0, "f": 2.5,
    }  # fmt: skip
    rows = list(flatten_examples({"index": [7, 9], "x": [1, 0.5], "sub": {"index": [9], "y": [False]}, "z": None}))
    assert rows == [("x", 7, 1.0), ("x", 9, 0.5), ("sub.y", 9, 0.0)]
    assert list(flatten_examples({"x": [3, 4]})) == [("x", 0, 3.0), ("x", 1, 4.0)]
    with pytest.raises(ValueError, match=r"per_example\.x: expected 2 values \(one per index\), got 3"):
        list(flatten_examples({"index": [1, 2], "x": [1, 2, 3]}))
    with pytest.raises(ValueError, match=r"metrics\.a: expected a number"):
        flatten_metrics({"a": "high"})


def test_record_evaluation_round_trip(tmp_path: Path) -> None:
    results = fake_results("robust", seed=4)
    with open_store(tmp_path / "r.db") as store:
        run_id = store.record_evaluation(results)
        row = store.run(run_id)
        values = store.example_values(run_id)
    assert (row["kind"], row["name"], row["dataset"], row["model"], row["objective"]) == (
        "evaluate", "robust", "mnist", "small_cnn", "pgd_at",
    )  # fmt: skip
    assert row["status"] == "completed" and row["seed"] == 0 and row["duration_s"] == 2.0
    protocol, fingerprint = protocol_lib.of_results(results)
    assert row["config"] == {"eval": results["eval_config"], "train": results["train_config"], "protocol": protocol}
    assert row["protocol"] == fingerprint
    assert row["checkpoint"] == results["checkpoint"] and row["checkpoint_sha256"] == results["checkpoint_sha256"]
    assert row["extra"]["timings"] == results["timings"] and row["extra"]["dataset"] == results["dataset"]
    assert row["code_version"] == attrobust.__version__ and row["git_commit"] == code_version()["git_commit"]
    assert row["machine"] == json.loads(json.dumps(machine_info("cpu")))
    expected_metrics = flatten_metrics(results["summary"]) | flatten_metrics(results["timings"], "timings.")
    assert row["metrics"] == expected_metrics
    assert "pgd_acc" not in row["metrics"] and row["metrics"]["ifia.topk.median"] == 0.5
    pe = results["per_example"]
    assert set(values) == {"label", "natural_correct", "ifia.topk", "ifia.valid", "ifia.step"}
    assert values["label"] == {i: float(v) for i, v in zip(pe["index"], pe["label"], strict=True)}
    assert values["natural_correct"] == {i: float(v) for i, v in zip(pe["index"], pe["natural_correct"], strict=True)}
    ifia = pe["ifia"]
    assert values["ifia.topk"] == dict(zip(ifia["index"], ifia["topk"], strict=True))
    assert values["ifia.valid"] == {i: float(v) for i, v in zip(ifia["index"], ifia["valid"], strict=True)}
    with open_store(tmp_path / "r.db") as store:
        with pytest.raises(ValueError, match="expected the id of a recorded run, got 99"):
            store.run(99)
        with pytest.raises(ValueError, match="expected an evaluate\\(\\) result with a 'summary'"):
            store.record_evaluation({"eval_config": {}})


def test_record_train_round_trip(tmp_path: Path) -> None:
    cfg = from_dict(TrainConfig, {**TINY_TRAIN, "seed": 7, "out_dir": str(tmp_path)})
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    history = [{"step": 2, "loss": 1.5, "acc": 0.25}, {"step": 4, "loss": 1.0, "acc": 0.5}]
    with open_store(tmp_path / "r.db") as store:
        metrics = {"test_acc": 0.5, "train": {"loss": 1.0}}
        done = store.record_train(cfg, duration_s=3.5, checkpoint=ckpt, metrics=metrics, history=history)
        stopped = store.record_train(cfg, status="stopped")
        row, other = store.run(done), store.run(stopped)
        with pytest.raises(ValueError, match="status: expected one of 'completed', 'stopped', got 'crashed'"):
            store.record_train(cfg, status="crashed")
    assert (row["kind"], row["name"], row["dataset"], row["model"], row["objective"], row["seed"]) == (
        "train", "tiny", "synthetic", "small_cnn", "natural", 7,
    )  # fmt: skip
    assert from_dict(TrainConfig, row["config"]) == cfg
    assert row["checkpoint_sha256"] == hashlib.sha256(b"weights").hexdigest() and row["duration_s"] == 3.5
    assert row["metrics"] == {"test_acc": 0.5, "train.loss": 1.0} and row["extra"]["history"] == history
    assert other["status"] == "stopped" and other["checkpoint"] is None and other["metrics"] == {}


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    bad = fake_results("dup")
    bad["per_example"]["index"][1] = bad["per_example"]["index"][0]  # a duplicated example id breaks the key
    with open_store(tmp_path / "r.db") as store:
        store.record_evaluation(fake_results("ok"))
        with pytest.raises(sqlite3.IntegrityError):
            store.record_evaluation(bad)
        assert [r["name"] for r in store.runs()] == ["ok"]
        count = store._conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        assert count == len(store.runs()[0]["metrics"])


def test_a_writer_waits_for_the_lock_and_gives_up_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    with open_store(path):
        pass
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    with open_store(path, timeout=0.05) as store:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            store.record_evaluation(fake_results("late"))
        holder.execute("COMMIT")
        store.record_evaluation(fake_results("late"))
        assert [r["name"] for r in store.runs()] == ["late"]
    holder.close()


# ------------------------------------------------------------------------------------ listing and leaderboard


@pytest.fixture
def populated(tmp_path: Path) -> Path:
    path = tmp_path / "board.db"
    with open_store(path) as store:
        store.record_evaluation(fake_results("natural", topk=0.2))  # id 1
        store.record_evaluation(fake_results("pgd_at", topk=0.6))  # id 2
        store.record_evaluation(fake_results("igr", topk=0.4, seed=3))  # id 3
        store.record_evaluation(fake_results("natural", topk=0.3))  # id 4: newer result of the same checkpoint
        store.record_evaluation(fake_results("fm", dataset="fashion_mnist", topk=0.9))  # id 5
        store.record_evaluation(fake_results("no_ifia", topk=None))  # id 6: IFIA skipped
        cfg = from_dict(TrainConfig, {**TINY_TRAIN, "name": "t", "data": {"name": "mnist"}})
        store.record_train(cfg, metrics={"test_acc": 0.8})  # id 7
        store.record_train(cfg, status="stopped", metrics={"test_acc": 0.99})  # id 8: not a finished model
    return path


def test_runs_listing_and_filters(populated: Path) -> None:
    with open_store(populated) as store:
        rows = store.runs()
        assert [r["id"] for r in rows] == [8, 7, 6, 5, 4, 3, 2, 1]
        assert [r["id"] for r in store.runs(kind="train")] == [8, 7]
        assert [r["id"] for r in store.runs(dataset="fashion_mnist")] == [5]
        assert [r["id"] for r in store.runs(kind="evaluate", dataset="mnist", limit=2)] == [6, 4]
        assert store.runs(dataset="cifar10") == []
        assert rows[4]["metrics"]["topk"] == 0.3 and rows[0]["metrics"] == {"test_acc": 0.99}
        with pytest.raises(ValueError, match="kind: expected one of 'train', 'evaluate', got 'bench'"):
            store.runs(kind="bench")
        with pytest.raises(ValueError, match="limit: expected an integer >= 1, got 0"):
            store.runs(limit=0)


def test_leaderboard_ranks_the_latest_result_of_each_model(populated: Path) -> None:
    with open_store(populated) as store:
        board = store.leaderboard("mnist", "topk")
        assert [(r["rank"], r["name"], r["value"]) for r in board] == [(1, "pgd_at", 0.6), (2, "igr", 0.4),
                                                                       (3, "natural", 0.3)]  # fmt: skip
        assert board[1]["train_seed"] == 3 and board[2]["run_id"] == 4 and board[0]["n"] == 4
        assert board[0]["metric"] == "topk" and board[0]["kind"] == "evaluate"
        ascending = store.leaderboard("mnist", "topk", descending=False)
        assert [r["name"] for r in ascending] == ["natural", "igr", "pgd_at"]
        assert [r["name"] for r in store.leaderboard("mnist", "topk", limit=1)] == ["pgd_at"]
        assert [r["name"] for r in store.leaderboard("fashion_mnist", "topk")] == ["fm"]
        median = store.leaderboard("mnist", "topk_median")
        assert median[0]["metric"] == METRIC_ALIASES["topk_median"] == "ifia.topk.median" and len(median) == 4
        train_board = store.leaderboard("mnist", "test_acc")
        assert [(r["name"], r["value"], r["kind"]) for r in train_board] == [("t", 0.8, "train")]
        assert store.leaderboard("mnist", "timings.ifia")[0]["value"] == 1.0  # any stored name works
        assert store.leaderboard("cifar10", "topk") == []


def test_unknown_metric_lists_the_available_ones(populated: Path) -> None:
    with open_store(populated) as store, pytest.raises(ValueError) as err:
        store.leaderboard("mnist", "topq")
    message = str(err.value)
    assert message.startswith("metric: expected one of") and message.endswith("got 'topq'")
    for name in ("topk", "kendall", "natural_acc", "pgd_acc", "ifia.topk.median", "timings.total"):
        assert name in message


# ---------------------------------------------------------------------------------------- concurrent writers


def _writer(db: str, worker: str, barrier: Any, error_dir: str) -> None:
    """One writing process: 50 evaluations of 200 per-example values each, started together with the other."""
    try:
        barrier.wait(timeout=120)
        with open_store(db) as store:
            for j in range(50):
                store.record_evaluation({
                    "checkpoint": None, "checkpoint_sha256": None, "dataset": {"name": "mnist"},
                    "eval_config": {"seed": j}, "train_config": {"name": f"{worker}-{j}"},
                    "summary": {"n": 200, "topk": j / 50, "natural_acc": 1.0},
                    "per_example": {"index": list(range(200)), "topk": [j / 50] * 200}, "timings": {"total": 0.0},
                })  # fmt: skip
    except BaseException as err:
        (Path(error_dir) / f"error-{worker}").write_text(repr(err))
        raise


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    # fork starts the writers without re-importing torch (seconds each); spawn where fork does not exist
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    code_version(), machine_info(None)  # cached before forking: the writers only touch SQLite
    db, barrier = tmp_path / "shared.db", ctx.Barrier(2)
    procs = [ctx.Process(target=_writer, args=(str(db), w, barrier, str(tmp_path))) for w in ("a", "b")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=300)
    assert [p.exitcode for p in procs] == [0, 0]
    assert not list(tmp_path.glob("error-*")), [e.read_text() for e in tmp_path.glob("error-*")]
    with open_store(db, create=False) as store:
        rows = store.runs()
        assert len(rows) == 100
        assert {r["name"] for r in rows} == {f"{w}-{j}" for w in "ab" for j in range(50)}
        assert all(r["metrics"] == {"n": 200.0, "topk": r["seed"] / 50, "natural_acc": 1.0, "timings.total": 0.0}
                   for r in rows)  # fmt: skip
        conn = store._conn
        assert conn.execute("SELECT COUNT(*) FROM example_values").fetchone()[0] == 100 * 200
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# ------------------------------------------------------------------------------------- train/evaluate hooks


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    out = tmp_path_factory.mktemp("hooks") / "runs"
    os.environ.pop("ATTROBUST_DB", None)
    result = train(from_dict(TrainConfig, {**TINY_TRAIN, "out_dir": str(out)}), progress=False)
    return result, out / "attrobust.db"


def test_train_records_a_run_beside_the_run_directories(trained: tuple[Any, Path]) -> None:
    result, db = trained
    assert db.is_file()
    with open_store(db) as store:
        rows = store.runs(kind="train")
    assert len(rows) == 1
    row = rows[0]
    assert row["name"] == "tiny" and row["status"] == "completed" and row["dataset"] == "synthetic"
    assert row["checkpoint"] == str(result.model_path)
    assert row["checkpoint_sha256"] == hashlib.sha256(result.model_path.read_bytes()).hexdigest()
    assert row["metrics"]["test_acc"] == pytest.approx(result.test_acc)
    assert row["metrics"]["train.loss"] == pytest.approx(result.history[-1]["loss"])
    assert row["metrics"]["steps"] == 4 and row["duration_s"] == pytest.approx(result.seconds)
    assert row["extra"]["history"] == json.loads(json.dumps(result.history))
    assert from_dict(TrainConfig, row["config"]) == result.config


def test_train_reuse_stop_and_opt_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = from_dict(TrainConfig, {**TINY_TRAIN, "out_dir": str(tmp_path / "runs")})
    db = tmp_path / "runs" / "attrobust.db"
    train(cfg, progress=False, stop_after=2)
    train(cfg, progress=False, resume=True)
    again = train(cfg, progress=False)
    assert again.reused
    with open_store(db) as store:
        assert [r["status"] for r in store.runs()] == ["completed", "stopped"], "a reused model is not recorded"
    off = from_dict(TrainConfig, {**TINY_TRAIN, "out_dir": str(tmp_path / "off")})
    train(off, progress=False, db=False)
    assert not (tmp_path / "off" / "attrobust.db").exists()
    monkeypatch.setenv("ATTROBUST_DB", str(tmp_path / "env.db"))
    train(off, progress=False, force=True)
    with open_store(tmp_path / "env.db") as store:
        assert [r["name"] for r in store.runs()] == ["tiny"]
    assert not (tmp_path / "off" / "attrobust.db").exists()


def test_evaluate_records_summary_and_per_example_values(trained: tuple[Any, Path], tmp_path: Path) -> None:
    result, db = trained
    results = evaluate(result.model_path, from_dict(EvalConfig, FAST_EVAL), progress=False, out=tmp_path / "r.json")
    assert results["db"]["path"] == str(db)
    with open_store(db) as store:
        row = store.run(results["db"]["run_id"])
        values = store.example_values(row["id"])
    assert row["kind"] == "evaluate" and row["name"] == "tiny" and row["results_path"] == str(tmp_path / "r.json")
    assert row["checkpoint_sha256"] == results["checkpoint_sha256"] and row["model"] == "small_cnn"
    s = results["summary"]
    for key in ("natural_acc", "pgd_acc", "topk", "kendall", "no_valid", "n"):
        assert row["metrics"][key] == pytest.approx(s[key])
    assert row["metrics"]["ifia.kendall.median"] == pytest.approx(s["ifia"]["kendall"]["median"])
    pe = results["per_example"]
    assert values["pgd_correct"] == {i: float(c) for i, c in zip(pe["index"], pe["pgd_correct"], strict=True)}
    assert values["ifia.kendall"] == pytest.approx(dict(zip(pe["ifia"]["index"], pe["ifia"]["kendall"], strict=True)))
    assert len(values["ifia.topk"]) == s["ifia"]["attacked"]


def test_evaluate_in_memory_model_needs_an_explicit_db(trained: tuple[Any, Path], tmp_path: Path) -> None:
    result, _ = trained
    cfg = from_dict(EvalConfig, {**FAST_EVAL, "skip_pgd": True, "skip_ifia": True, "dataset": "synthetic"})
    from attrobust import data

    ds = data.load("synthetic", "test", n=20, size=8, num_classes=3)
    plain = evaluate(result.model, cfg, dataset=ds, progress=False, out=tmp_path / "x.json")
    assert "db" not in plain and not list(tmp_path.glob("*.db"))
    recorded = evaluate(result.model, cfg, dataset=ds, progress=False, db=tmp_path / "mem.db")
    with open_store(tmp_path / "mem.db") as store:
        row = store.run(recorded["db"]["run_id"])
        values = store.example_values(row["id"])
    assert row["name"] is None and row["checkpoint"] is None and row["dataset"] == "synthetic"
    assert set(values) == {"label", "natural_correct"} and len(values["label"]) == 12


def test_hook_warns_instead_of_losing_the_result(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(RuntimeWarning, match="the result was not recorded"):
        assert record_evaluation_result(fake_results("a"), blocker / "r.db") is None


# ------------------------------------------------------------------------------------------------------ CLI


def test_cli_runs_and_leaderboard(populated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listed = runner.invoke(app, ["runs", "--db", str(populated)])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0].split(" | ")[:3] == ["id", "kind    ", "created (UTC)      "]
    assert [line.split("|")[0].strip() for line in lines[2:]] == ["8", "7", "6", "5", "4", "3", "2", "1"]
    assert "topk=0.3000" in lines[6]
    # each row names its protocol: metrics of different fingerprints are not comparable
    header = [c.strip() for c in lines[0].split(" | ")]
    stored = {r["id"]: r["protocol"] or "-" for r in open_store(populated).runs()}
    cells = {int(line.split("|")[0]): line.split(" | ")[header.index("protocol")].strip() for line in lines[2:]}
    assert cells == stored and any(v != "-" for v in cells.values())
    only = runner.invoke(app, ["runs", "--db", str(populated), "--kind", "train", "--limit", "1"])
    assert only.exit_code == 0 and len(only.output.splitlines()) == 3 and "stopped" in only.output
    none = runner.invoke(app, ["runs", "--db", str(populated), "--dataset", "svhn"])
    assert none.exit_code == 0 and "no runs recorded" in none.output
    monkeypatch.setenv("ATTROBUST_DB", str(populated))
    board = runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--metric", "topk"])
    assert board.exit_code == 0, board.output
    assert board.output.startswith("protocol ")  # the protocol ranked, then the table
    rows = [line.split("|") for line in board.output.splitlines()[3:]]
    assert [(r[0].strip(), r[1].strip(), r[2].strip()) for r in rows] == [
        ("1", "0.6000", "pgd_at"), ("2", "0.4000", "igr"), ("3", "0.3000", "natural"),
    ]  # fmt: skip
    asc = runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--ascending", "--limit", "1"])
    assert asc.exit_code == 0 and [line.split("|")[2].strip() for line in asc.output.splitlines()[3:]] == ["natural"]
    bad = runner.invoke(app, ["leaderboard", "--dataset", "mnist", "--metric", "topq"])
    assert bad.exit_code == 2 and "error: metric: expected one of" in bad.output and "Traceback" not in bad.output


def test_cli_missing_db_is_a_clear_error(tmp_path: Path) -> None:
    for args in (["runs"], ["leaderboard", "--dataset", "mnist"]):
        result = runner.invoke(app, [*args, "--db", str(tmp_path / "none.db")])
        assert result.exit_code == 2, result.output
        assert "error: no results database at" in result.output and "Traceback" not in result.output
        assert not (tmp_path / "none.db").exists()


def test_cli_train_and_evaluate_db_options(tmp_path: Path) -> None:
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({**TINY_TRAIN, "out_dir": str(tmp_path / "runs")}))
    own = tmp_path / "own.db"
    trained = runner.invoke(app, ["train", str(cfg), "-q", "--db", str(own)])
    assert trained.exit_code == 0, trained.output
    assert own.is_file() and not (tmp_path / "runs" / "attrobust.db").exists()
    ckpt = str(tmp_path / "runs" / "tiny" / "model.pt")
    fast = ["--n", "6", "--attack", "none", "-q"]
    skipped = runner.invoke(app, ["evaluate", ckpt, *fast, "--no-db"])
    assert skipped.exit_code == 0, skipped.output
    assert not (tmp_path / "runs" / "attrobust.db").exists()
    default = runner.invoke(app, ["evaluate", ckpt, *fast])
    assert default.exit_code == 0 and (tmp_path / "runs" / "attrobust.db").is_file()
    both = runner.invoke(app, ["evaluate", ckpt, *fast, "--no-db", "--db", str(own)])
    assert both.exit_code == 2 and "expected at most one of them" in both.output
    listed = runner.invoke(app, ["runs", "--db", str(own)])
    assert listed.exit_code == 0 and "tiny" in listed.output and "train" in listed.output
