"""Every command against bad input: one line ``error: ...`` on stderr, exit status 2, never a traceback (and an
unexpected exception still shows its traceback); names in terminal tables cannot carry control characters."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from attrobust.cli import app
from attrobust.experiments.config import TrainConfig, from_dict
from attrobust.experiments.results.store import open_store
from attrobust.experiments.results.tables import escape_controls, format_runs
from attrobust.experiments.train import train

runner = CliRunner()
cli_lib = importlib.import_module("attrobust.cli")
evaluate_lib = importlib.import_module("attrobust.experiments.evaluate")

TINY = {
    "name": "tiny",
    "data": {"name": "synthetic", "kwargs": {"n": 64, "size": 8, "num_classes": 3}, "test_subset": 16},
    "model": {"name": "small_cnn"},
    "optim": {"lr": 1e-2},
    "steps": 2,
    "batch_size": 16,
}
FAST = ["--n", "4", "--eps", "0.1", "--step-size", "0.05", "--steps", "1", "--pgd-steps", "1", "--ig-steps", "2",
        "--restarts", "1", "-q", "--no-db"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "tiny.yaml").write_text(yaml.safe_dump({**TINY, "out_dir": str(root / "runs")}))
    (root / "epochs.yaml").write_text(yaml.safe_dump({**TINY, "steps": None, "epochs": 1, "name": "ep",
                                                      "out_dir": str(root / "runs")}))  # fmt: skip
    train(from_dict(TrainConfig, {**TINY, "out_dir": str(root / "runs")}), progress=False, db=False)
    (root / "garbage.pt").write_bytes(b"not a checkpoint")
    (root / "adir").mkdir()
    (root / "bad.json").write_text("{")
    return root


def train_args(root: Path, *sets: str) -> list[str]:
    return ["train", str(root / "tiny.yaml"), "-q", "--no-db", "--set", f"out_dir={root / 'bad_runs'}",
            *[a for s in sets for a in ("--set", s)]]  # fmt: skip


def evaluate_args(root: Path, *more: str) -> list[str]:
    return ["evaluate", str(root / "runs" / "tiny" / "model.pt"), *FAST, *more]


# (case, arguments given the fixture's root, a fragment the message must contain)
CASES = [
    ("train: unknown data.kwargs key", lambda r: train_args(r, "data.kwargs.foo=1"),
     "data.kwargs: unknown option 'foo'"),
    ("train: device banana", lambda r: train_args(r, "device=banana"), "device: expected a torch device"),
    ("train: run name too long", lambda r: train_args(r, "name=" + "n" * 300), "name: expected a run name of at most"),
    ("train: objective eps abc", lambda r: train_args(r, "objective.name=pgd_at", "objective.params={eps: abc}"),
     "objective.params.eps"),
    ("train: out_dir name too long", lambda r: train_args(r, f"out_dir={r / ('d' * 300)}"), "too long"),
    ("train: missing config", lambda r: ["train", str(r / "nope.yaml")], "config file not found"),
    ("train: steps and epochs", lambda r: train_args(r, "epochs=1", "steps=2"), "epochs/steps"),
    ("evaluate: --out a directory", lambda r: evaluate_args(r, "--k", "4", "--out", str(r / "adir")),
     "existing directory"),
    ("evaluate: --k beyond the map", lambda r: evaluate_args(r, "--k", "10000"), "ifia.k: expected at most the 64"),
    ("evaluate: device banana", lambda r: evaluate_args(r, "--k", "4", "--set", "device=banana"), "device:"),
    ("evaluate: missing checkpoint", lambda r: ["evaluate", str(r / "none.pt")], "checkpoint not found"),
    ("evaluate: garbage checkpoint", lambda r: ["evaluate", str(r / "garbage.pt")], "expected a torch checkpoint"),
    ("evaluate: bad --attack", lambda r: evaluate_args(r, "--attack", "x"), "--attack"),
    ("evaluate: unknown metric", lambda r: evaluate_args(r, "--k", "4", "--metrics", "nope"), "metrics: unknown"),
    ("evaluate: --out under a file", lambda r: evaluate_args(r, "--k", "4", "--out", str(r / "bad.json" / "x.json")),
     "out: expected a directory"),
    ("runs: no database", lambda r: ["runs", "--db", str(r / "none.db")], "no results database"),
    ("runs: bad kind", lambda r: ["runs", "--db", str(r / "runs.db"), "--kind", "x"], "kind"),
    ("runs: not a database", lambda r: ["runs", "--db", str(r / "bad.json")], "not a readable SQLite results database"),
    ("leaderboard: no database", lambda r: ["leaderboard", "--dataset", "mnist", "--db", str(r / "none.db")],
     "no results database"),
    ("report: missing results", lambda r: ["report", str(r / "none.json"), "--out", str(r / "rep")], "none.json"),
    ("report: broken JSON", lambda r: ["report", str(r / "bad.json"), "--out", str(r / "rep")], "bad.json"),
    ("audit: bad factory", lambda r: ["audit", "--model", "nope_module:f", "--data", "synthetic", "--out",
                                      str(r / "audit")], "nope_module"),
    ("bench table: unknown table", lambda r: ["bench", "table", "nope", "--out-dir", str(r / "b")], "nope"),
    ("bench quickstart: bad budget", lambda r: ["bench", "quickstart", "--budget", "x", "--out-dir", str(r / "b")],
     "budget"),
    ("demo: bad budget", lambda r: ["demo", "--budget", "x", "--out-dir", str(r / "b")], "budget"),
    ("show: unknown name", lambda r: ["show", "nope"], "expected a registered name"),
    ("list: unknown kind", lambda r: ["list", "nope"], "nope"),
]


@pytest.mark.parametrize(("case", "args", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_error_without_traceback(root: Path, case: str, args, fragment: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("an attack ran before the input was checked")

    monkeypatch.setattr(evaluate_lib.attacks, "pgd", boom)  # nothing here may get as far as an attack
    with open_store(root / "runs.db"):
        pass
    result = runner.invoke(app, args(root))
    assert result.exit_code == 2, f"{case}: {result.output}{result.exception!r}"
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit), case
    errors = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], f"{case}: {result.output}"
    assert not list(root.rglob("*.tmp")), case


def test_every_command_is_in_the_bad_input_matrix() -> None:
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    names |= {f"bench {c.name}" for g in app.registered_groups for c in g.typer_instance.registered_commands}
    covered = {c[0].split(":")[0] for c in CASES} | {"list", "bench tables"}  # these two take no input
    assert names <= covered, names - covered


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
def test_cuda_without_cuda_is_one_line_naming_the_device(root: Path) -> None:
    for args in (train_args(root, "device=cuda"), evaluate_args(root, "--k", "4", "--set", "device=cuda")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and "Traceback" not in result.output, result.output
        assert "error: device: expected a device of this machine, got 'cuda'" in result.output
        assert "weights_only" not in result.output


def test_set_steps_on_a_config_with_epochs_works(root: Path) -> None:
    result = runner.invoke(app, ["train", str(root / "epochs.yaml"), "-q", "--no-db", "--set", "steps=1"])
    assert result.exit_code == 0, result.output
    assert "trained 1 steps" in result.output
    saved = yaml.safe_load((root / "runs" / "ep" / "config.yaml").read_text())
    assert (saved["steps"], saved["epochs"]) == (1, None)


def test_an_unexpected_exception_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> dict:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli_lib, "registries", broken)
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 1 and isinstance(result.exception, RuntimeError)


def test_control_characters_in_names_are_escaped(root: Path, tmp_path: Path) -> None:
    name = "evil\x1b[31m\nforged | row\r\u202e"
    assert escape_controls(name) == "evil\\x1b[31m\\nforged | row\\r\\u202e"
    db = tmp_path / "runs.db"
    with open_store(db) as store:
        store.record_train({**TINY, "name": name}, duration_s=1.0)
    result = runner.invoke(app, ["runs", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\u202e" not in result.output
    assert len(result.output.splitlines()) == 3  # header, rule, one row
    assert "evil\\x1b[31m\\nforged" in result.output
    rows = [{"id": 1, "kind": "train", "created_at": "2026", "name": "a\nb", "dataset": None, "model": None,
             "objective": None, "seed": None, "status": "completed", "duration_s": None, "metrics": {}}]  # fmt: skip
    assert len(format_runs(rows).splitlines()) == 3


def test_error_line_escapes_control_characters(root: Path) -> None:
    result = runner.invoke(app, ["train", str(root / "tiny.yaml"), "-q", "--set", "name=a\x1bb\nc/d"])
    assert result.exit_code == 2 and "\x1b" not in result.output
    assert len([line for line in result.output.splitlines() if line]) == 1, json.dumps(result.output)


def test_error_line_carries_the_notes_and_system_errors_name_the_file() -> None:
    err = ValueError("out of memory")
    err.add_note("kept in r.partial: continue with --resume")
    assert cli_lib.error_message(err) == "out of memory; kept in r.partial: continue with --resume"
    assert cli_lib.error_message(OSError(36, "File name too long", "x" * 3)) == "File name too long: xxx"
