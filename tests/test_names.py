"""One spelling of dataset and objective names shown and stored (``fashion_mnist``, ``trades+igr``), the others
(``fashion-mnist``, ``Fashion-MNIST``, ``trades_igr``) accepted wherever a name is read."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from attrobust import cli, data, objectives
from attrobust.cli import app
from attrobust.experiments.config import DataConfig, EvalConfig, ObjectiveConfig, TrainConfig, from_dict
from attrobust.experiments.protocol import defaults_file, eval_defaults
from attrobust.experiments.results.store import open_store

runner = CliRunner()


@pytest.mark.parametrize("spelling", ["fashion-mnist", "fashion_mnist", "Fashion-MNIST", " FASHION_MNIST "])
def test_dataset_spellings_read_as_the_registered_name(spelling: str) -> None:
    assert data.canonical_name(spelling) == "fashion_mnist"
    assert DataConfig(name=spelling).name == "fashion_mnist"
    assert EvalConfig(dataset=spelling).dataset == "fashion_mnist"
    assert defaults_file(spelling) == defaults_file("fashion_mnist") is not None
    assert eval_defaults(spelling) == eval_defaults("fashion_mnist")


def test_other_dataset_strings_are_untouched_and_loading_accepts_a_spelling(tmp_path: Path) -> None:
    assert data.canonical_name(str(tmp_path)) == str(tmp_path)
    assert data.canonical_name("fashion-mnst") == "fashion-mnst"
    with pytest.raises(ValueError, match="unknown dataset 'fashion-mnst'"):
        data.load("fashion-mnst")
    with pytest.raises(TypeError, match="dataset name: expected a str, got int"):
        data.canonical_name(3)  # type: ignore[arg-type]
    a, b = data.load("Synthetic", "test", n=6, size=8), data.load("synthetic", "test", n=6, size=8)
    assert a.images.equal(b.images) and a.labels.equal(b.labels)


def test_leaderboard_and_runs_find_a_dataset_in_any_spelling(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    cfg = from_dict(TrainConfig, {"name": "fm", "steps": 1, "data": {"name": "fashion-mnist"}})
    with open_store(db) as store:
        store.record_train(cfg, metrics={"test_acc": 0.8})
    for spelling in ("fashion_mnist", "fashion-mnist", "Fashion-MNIST"):
        board = runner.invoke(app, ["leaderboard", "--db", str(db), "--dataset", spelling, "--metric", "test_acc"])
        assert board.exit_code == 0 and "| fm" in board.output and "0.8000" in board.output, board.output
        runs = runner.invoke(app, ["runs", "--db", str(db), "--dataset", spelling])
        assert runs.exit_code == 0 and "no runs recorded" not in runs.output, runs.output


def test_objective_spellings_build_the_same_objective() -> None:
    params = {"beta": 1.0, "eps": 0.1, "step_size": 0.05, "steps": 1, "lam": 0.5, "ig_steps": 2}
    assert objectives.create("trades_igr", **params) == objectives.create("trades+igr", **params)
    assert objectives.canonical_name("mart_igr") == "mart+igr" and objectives.canonical_name("pgd_at") == "pgd_at"
    assert ObjectiveConfig(name="pgd_at_igr").name == "pgd_at+igr"
    with pytest.raises(ValueError, match=r"objective 'trades\+igr': bad parameters .* expected: lam, ig_steps, "):
        objectives.create("trades_igr", nope=1)
    with pytest.raises(ValueError, match="unknown objective 'trades-igr'"):
        objectives.create("trades-igr")


def test_bench_table_models_take_the_objective_spelling(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = {}
    monkeypatch.setattr(cli, "table", lambda name, out_dir, budget, **kw: seen.update(name=name, models=kw["models"]))
    result = runner.invoke(app, ["bench", "table", "igr_table2_mnist", "--models", "trades+igr, pgd_at_igr,natural"])
    assert result.exit_code == 0, result.output
    assert seen == {"name": "igr_table2_mnist", "models": ["trades_igr", "pgd_at_igr", "natural"]}
