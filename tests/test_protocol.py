"""The evaluation protocol: per-dataset defaults from the paper presets, no budget without one, the protocol
printed and stored, its fingerprint, results kept apart per protocol (files, database, leaderboard, report)."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from attrobust import data
from attrobust.cli import app
from attrobust.experiments import bench
from attrobust.experiments import protocol as protocol_lib
from attrobust.experiments.config import (
    EvalConfig,
    IFIAEvalConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    merge,
    read_yaml,
    to_dict,
)
from attrobust.experiments.evaluate import evaluate
from attrobust.experiments.report import write_report
from attrobust.experiments.results.schema import MIGRATIONS, SCHEMA_VERSION
from attrobust.experiments.results.store import open_store
from attrobust.experiments.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DEFAULTS = sorted((CONFIGS / "defaults").glob("*.yaml"))
runner = CliRunner()
FAST = ["--n", "12", "--eps", "0.1", "--step-size", "0.05", "--steps", "2", "--pgd-steps", "2", "--ig-steps", "3",
        "--restarts", "1", "--beta", "5", "--no-db"]  # fmt: skip
FAST_CFG = {
    "n": 12,
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
    "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
}
DATA = {"name": "synthetic", "kwargs": {"n": 48, "size": 8, "num_classes": 3, "noise": 0.6}}


def _extended(path: Path) -> Path:
    """The paper table's ``_eval.yaml`` a defaults file extends."""
    return (path.parent / yaml.safe_load(path.read_text())["extends"]).resolve()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two small_cnn models trained a few steps on 8x8 synthetic data, in <root>/<name>/model.pt."""
    root = tmp_path_factory.mktemp("runs")
    base = {"data": DATA, "model": {"name": "small_cnn"}, "optim": {"lr": 1e-2}, "steps": 4, "batch_size": 16,
            "out_dir": str(root)}  # fmt: skip
    configs = [from_dict(TrainConfig, {**base, "name": name, "seed": seed}) for seed, name in enumerate("ab")]
    return [train(cfg, progress=False, db=False).model_path for cfg in configs]


# ------------------------------------------------------------------------------------------ defaults per dataset


def test_cifar10_defaults_are_what_its_yaml_says() -> None:
    cfg = protocol_lib.eval_defaults("cifar10")
    raw = yaml.safe_load(_extended(CONFIGS / "defaults" / "cifar10.yaml").read_text())
    for section in ("pgd", "ifia"):
        for key, value in raw[section].items():
            assert getattr(getattr(cfg, section), key) == value, (section, key)
    assert cfg.n == raw["n"]
    assert cfg.ifia.k == 1000 and cfg.pgd.eps == cfg.ifia.eps == pytest.approx(8 / 255, abs=1e-4)


@pytest.mark.parametrize("path", DEFAULTS, ids=lambda p: p.stem)
def test_each_default_is_its_papers_table(path: Path) -> None:
    """Every defaults file names a registered dataset, extends the _eval.yaml of a table on that dataset, and
    the resolved defaults are that file's values; a table of the smoothing paper (no IFIA) gives no IFIA budget."""
    assert path.stem in data.DATASETS.names()
    table = _extended(path)
    assert table.name == "_eval.yaml" and (table.parent / "_base.yaml").is_file()
    assert read_yaml(table.parent / "_base.yaml")["data"]["name"] == path.stem
    assert protocol_lib.eval_defaults(path.stem) == merge(EvalConfig(), read_yaml(path))
    if table.parent.name.startswith("fms_"):
        assert protocol_lib.eval_defaults(path.stem).ifia.k is None


def test_every_dataset_with_a_paper_table_has_defaults() -> None:
    on = {read_yaml(base)["data"]["name"] for base in CONFIGS.glob("*/_base.yaml")}
    assert on == {p.stem for p in DEFAULTS}
    assert {"cub", "synthetic"} <= set(data.DATASETS.names()) - on  # the ones without a preset


@pytest.mark.parametrize("dataset", ["cub", "synthetic", "my_own_data", None])
def test_no_preset_no_budget(dataset: str | None) -> None:
    cfg = protocol_lib.eval_defaults(dataset)
    assert cfg == EvalConfig() and cfg.pgd.eps is None and cfg.ifia.k is None
    with pytest.raises(ValueError, match="no default budget") as err:
        protocol_lib.check_budget(cfg, dataset)
    for name in ("--eps", "--step-size", "--k", "pgd.eps", "ifia.eps", "ifia.k", "--set"):
        assert name in str(err.value)
    protocol_lib.check_budget(merge(cfg, {"skip_pgd": True, "skip_ifia": True}), dataset)  # nothing to budget


def test_evaluate_refuses_data_without_a_budget(checkpoints: list[Path], tmp_path: Path) -> None:
    ds = data.load("synthetic", "test", n=12, size=8, num_classes=3)
    folder = data.ImageDataset(ds.images, ds.labels, ds.classes, "my_photos")
    with pytest.raises(ValueError, match="dataset 'my_photos' has no evaluation preset"):
        evaluate(checkpoints[0], dataset=folder, progress=False, db=False, out=tmp_path / "r.json")
    out = tmp_path / "cli.json"
    result = runner.invoke(app, ["evaluate", str(checkpoints[0]), "--n", "4", "-q", "--no-db", "--out", str(out)])
    assert result.exit_code == 2 and "error: no default budget" in result.output
    assert "--eps" in result.output and "--k" in result.output and "Traceback" not in result.output
    assert not out.exists() and not (tmp_path / "r.json").exists()


# ------------------------------------------------------------------------------------------ printed and stored


def test_protocol_is_printed_first_and_stored(checkpoints: list[Path], tmp_path: Path) -> None:
    said: list[str] = []
    cfg = from_dict(EvalConfig, FAST_CFG)
    res = evaluate(checkpoints[0], cfg, progress=False, out=tmp_path / "r.json", db=False, echo=said.append)
    fp = res["protocol_fingerprint"]
    assert said[0].startswith(f"protocol {fp}: synthetic test, the first 12 samples, seed 0, batches of 100, cpu")
    for text in ("PGD l_inf (CE): eps 0.1, 2 steps of 0.05, random start", "k 8, eps 0.1, 2 steps of 0.05",
                 "3 IG points", "softplus beta 5", "1 run (from the clean image)"):  # fmt: skip
        assert text in said[0]
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["protocol_fingerprint"] == fp == protocol_lib.fingerprint(saved["protocol"])
    assert saved["protocol"]["ifia"]["k"] == 8 and saved["protocol"]["data"]["kwargs"] == DATA["kwargs"]
    legacy = {k: v for k, v in saved.items() if k not in ("protocol", "protocol_fingerprint")}
    assert protocol_lib.of_results(legacy) == (saved["protocol"], fp)  # results written before fingerprints
    loud = runner.invoke(app, ["evaluate", str(checkpoints[0]), *FAST, "--k", "8", "--out", str(tmp_path / "c.json")])
    quiet = runner.invoke(app, ["evaluate", str(checkpoints[0]), *FAST, "--k", "8", "-q",
                                "--out", str(tmp_path / "c.json")])  # fmt: skip
    assert loud.exit_code == quiet.exit_code == 0, loud.output + quiet.output
    assert loud.output.startswith("protocol ") and not any(x.startswith("protocol") for x in quiet.output.splitlines())


# ------------------------------------------------------------------------------------------ the fingerprint

# every field that changes the numbers, with another value
CHANGES = [
    "n=13", "sample=seeded", "seed=1", "batch_size=5", "device=cuda", "split=train", "dataset=mnist",
    "pgd.eps=0.2", "pgd.step_size=0.01", "pgd.steps=3", "pgd.random_start=false", "skip_pgd=true",
    "ifia.attribution=saliency", "ifia.dissimilarity=mass_center", "ifia.k=9", "ifia.eps=0.2", "ifia.step_size=0.01",
    "ifia.steps=3", "ifia.beta=null", "ifia.ig_steps=4", "ifia.restarts=2", "ifia.select_by=topk",
    "ifia.random_start=true", "ifia.eval_k=5", "ifia.restart_from=clean", "skip_ifia=true", "metrics=[gini]",
]  # fmt: skip


def _fp(cfg: EvalConfig, train_data: dict[str, Any] | None = DATA) -> str:
    return protocol_lib.fingerprint(protocol_lib.describe(cfg, protocol_lib.data_identity(cfg, train_data)))


def test_fingerprint_changes_with_every_setting_that_changes_the_numbers() -> None:
    base = from_dict(EvalConfig, FAST_CFG)
    prints = [_fp(base)] + [_fp(apply_overrides(base, [change])) for change in CHANGES]
    assert len(set(prints)) == len(prints)
    with_metrics = apply_overrides(base, ["metrics=[gini]"])
    assert _fp(with_metrics) != _fp(apply_overrides(with_metrics, ["suite.stability_samples=3"]))
    assert _fp(base) != _fp(base, {**DATA, "kwargs": {**DATA["kwargs"], "noise": 0.5}})
    # and only with those: where the data lie, the device index, suite settings without metrics, skipped attacks
    for same in ("data_dir=/elsewhere", "suite.stability_samples=3", "device=cpu"):
        assert _fp(apply_overrides(base, [same])) == _fp(base), same
    assert _fp(apply_overrides(base, ["device=cuda:0"])) == _fp(apply_overrides(base, ["device=cuda:1"]))
    no_pgd = apply_overrides(base, ["skip_pgd=true"])
    assert _fp(apply_overrides(no_pgd, ["pgd.eps=0.2"])) == _fp(no_pgd)


def test_eval_k_and_restart_from_change_the_fingerprint_and_are_printed() -> None:
    base = from_dict(EvalConfig, {**FAST_CFG, "ifia": {**FAST_CFG["ifia"], "restarts": 3}})
    rar = apply_overrides(base, ["ifia.eval_k=4", "ifia.restart_from=clean"])
    assert len({_fp(base), _fp(rar), _fp(apply_overrides(base, ["ifia.eval_k=4"]))}) == 3
    said = " ".join(protocol_lib.lines(protocol_lib.describe(rar, DATA)))
    assert "k 8 (top-4 intersection reported)" in said and "3 runs (each from the clean image)" in said
    said = " ".join(protocol_lib.lines(protocol_lib.describe(base, DATA)))
    assert "k 8, eps" in said and "the others from random points of the eps ball" in said


@pytest.mark.parametrize(("change", "message"), [
    ("ifia.eval_k=0", "ifia.eval_k: expected a value >= 1"),
    ("ifia.restart_from=noise", "ifia.restart_from: expected one of 'random', 'clean'"),
    ("ifia.attribution=salency", "ifia.attribution: expected one of .*saliency"),
    ("ifia.dissimilarity=kendall", "ifia.dissimilarity: expected one of 'topk', 'mass_center', 'random'"),
])  # fmt: skip
def test_bad_eval_k_and_restart_from_are_refused(change: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_overrides(from_dict(EvalConfig, FAST_CFG), [change])
    with pytest.raises(ValueError, match=r"ifia\.restart_from: expected"):  # built directly, not from YAML
        IFIAEvalConfig(restart_from="noise")  # type: ignore[arg-type]


def test_an_attribution_object_in_an_evaluation_is_refused_before_any_work(checkpoints: list[Path],
                                                                          tmp_path: Path) -> None:
    # the protocol is stored as JSON and names its method: a Captum object used to fail at the end, after the work;
    # in Python the suite may still measure one (tests/test_interop.py), so the config itself accepts it
    from captum.attr import Saliency

    cfg = from_dict(EvalConfig, {**FAST_CFG, "metrics": ["gini"]})
    cfg = replace(cfg, ifia=replace(cfg.ifia, attribution=Saliency))
    progress: list[str] = []
    with pytest.raises(ValueError, match=r"ifia\.attribution: expected the name of a registered attribution"):
        evaluate(checkpoints[0], cfg, progress=False, db=False, out=tmp_path / "r.json", echo=progress.append)
    assert not (tmp_path / "r.json").exists() and progress == []
    with pytest.raises(ValueError, match=r"ifia\.attribution: expected the name .* a Captum method or a callable"):
        IFIAEvalConfig(attribution=3)  # type: ignore[arg-type]


def test_every_config_field_is_in_the_protocol_or_argued_out() -> None:
    described = protocol_lib.describe(from_dict(EvalConfig, {**FAST_CFG, "metrics": ["gini"]}), {"name": "x"})
    fields = set(EvalConfig.__dataclass_fields__)
    assert fields - set(described) == set(protocol_lib.NOT_IN_PROTOCOL)
    assert set(described["ifia"]) == set(EvalConfig().ifia.__dataclass_fields__)


def test_fingerprint_is_stable_across_processes() -> None:
    cfg = from_dict(EvalConfig, FAST_CFG)
    code = ("import json, sys; from attrobust.experiments import protocol as p; from attrobust.experiments.config "
            "import EvalConfig, from_dict; c = from_dict(EvalConfig, json.loads(sys.argv[1])); "
            "print(p.fingerprint(p.describe(c, p.data_identity(c, json.loads(sys.argv[2])))))")  # fmt: skip
    args = [sys.executable, "-c", code, json.dumps(FAST_CFG), json.dumps(DATA)]
    other = subprocess.run(args, capture_output=True, text=True, timeout=120, check=True).stdout.strip()
    assert other == _fp(cfg) == _fp(from_dict(EvalConfig, json.loads(json.dumps(FAST_CFG))))
    assert len(other) == protocol_lib.FINGERPRINT_LENGTH and int(other, 16) >= 0


# ------------------------------------------------------------------------------------------ kept apart


def test_another_protocol_never_overwrites_and_is_never_ranked_with_it(checkpoints: list[Path], tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    fast = [f for f in FAST if f != "--no-db"] + ["--db", str(db), "-q"]
    for ckpt in checkpoints:
        result = runner.invoke(app, ["evaluate", str(ckpt), *fast, "--k", "8"])
        assert result.exit_code == 0, result.output
    first = json.loads((checkpoints[0].parent / "results.json").read_text())
    again = runner.invoke(app, ["evaluate", str(checkpoints[0]), *fast, "--k", "4"])
    assert again.exit_code == 0, again.output
    kept = json.loads((checkpoints[0].parent / "results.json").read_text())
    assert kept == first and kept["eval_config"]["ifia"]["k"] == 8
    second = json.loads(Path(again.output.splitlines()[-1].removeprefix("results: ")).read_text())
    fp8, fp4 = first["protocol_fingerprint"], second["protocol_fingerprint"]
    assert fp4 != fp8 and second["eval_config"]["ifia"]["k"] == 4
    assert (checkpoints[0].parent / f"results-{fp4}.json").is_file()
    with open_store(db) as store:
        assert [p["fingerprint"] for p in store.protocols("synthetic")] == [fp8, fp4]  # most models first
        assert {r["protocol"] for r in store.leaderboard("synthetic")} == {fp8}
        assert len(store.leaderboard("synthetic")) == 2
        only = store.leaderboard("synthetic", protocol=fp4[:6])
        assert [(r["name"], r["value"]) for r in only] == [("a", second["summary"]["topk"])]
        with pytest.raises(ValueError, match="protocol: unknown 'zzz'"):
            store.leaderboard("synthetic", protocol="zzz")
    board = runner.invoke(app, ["leaderboard", "--dataset", "synthetic", "--db", str(db)])
    assert board.exit_code == 0, board.output
    lines = board.output.splitlines()
    assert lines[0].startswith(f"protocol {fp8}: ") and "k 8" in lines[0]
    values = sorted(float(line.split("|")[1]) for line in lines[3:5])
    assert values == pytest.approx(sorted([first["summary"]["topk"], _topk(checkpoints[1])]), abs=1e-4)
    assert "--protocol" in board.output and f"  {fp4} (1 model): synthetic test" in board.output
    picked = runner.invoke(app, ["leaderboard", "--dataset", "synthetic", "--db", str(db), "--protocol", fp4])
    assert picked.exit_code == 0 and picked.output.startswith(f"protocol {fp4}")
    assert f"  {fp8} (2 models)" in picked.output
    # the demo's reuse: only results of the same protocol
    assert bench._reusable(checkpoints[0].parent / "results.json", fp8, checkpoints[0]) is not None
    assert bench._reusable(checkpoints[0].parent / "results.json", fp4, checkpoints[0]) is None


def _topk(checkpoint: Path) -> float:
    return json.loads((checkpoint.parent / "results.json").read_text())["summary"]["topk"]


def test_report_puts_protocols_in_separate_tables(checkpoints: list[Path], tmp_path: Path) -> None:
    cfg = from_dict(EvalConfig, {**FAST_CFG, "skip_ifia": True})
    a, b = (evaluate(c, cfg, progress=False, out=tmp_path / f"{c.parent.name}.json", db=False) for c in checkpoints)
    other = evaluate(checkpoints[0], merge(cfg, {"n": 6}), progress=False, out=tmp_path / "o.json", db=False)
    html, md = write_report({"a": a, "b": b}, tmp_path / "same")
    text = md.read_text()
    assert text.count("**Protocol**") == 1 and a["protocol_fingerprint"] in text
    assert html.read_text().count('<p class="protocol">') == 1
    html, md = write_report({"a": a, "b": b, "a, n=6": other}, tmp_path / "two")
    text = md.read_text()
    assert text.count("**Protocol**") == 2 and text.count("| model |") == 2
    first, second = text.split(f"**Protocol** protocol {other['protocol_fingerprint']}")
    assert "| a |" in first and "| b |" in first and "n=6" not in first and "| a, n=6 |" in second
    assert html.read_text().count('<p class="protocol">') == 2


# ------------------------------------------------------------------------------------------ database migration


def test_version_1_database_gains_the_protocol_of_its_evaluations(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    eval_cfg = from_dict(EvalConfig, FAST_CFG)
    config = {"eval": to_dict(eval_cfg), "train": {"name": "a", "data": DATA}}
    columns = "kind, name, created_at, status, dataset, config, machine, extra"
    conn.execute(f"INSERT INTO runs ({columns}) VALUES ('evaluate', 'a', 't', 'completed', 'synthetic', ?, '{{}}', ?)",
                 (json.dumps(config), json.dumps({"dataset": {"name": "synthetic", "split": "test"}})))  # fmt: skip
    conn.execute(f"INSERT INTO runs ({columns}) VALUES ('train', 'a', 't', 'completed', 'synthetic', '{{}}', '{{}}', "
                 "NULL)")  # fmt: skip
    conn.execute("INSERT INTO metrics VALUES (1, 'topk', 0.5)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with open_store(path) as store:
        assert store.schema_version == SCHEMA_VERSION == 2
        evaluation, training = store.run(1), store.run(2)
        assert evaluation["protocol"] == _fp(eval_cfg) and training["protocol"] is None
        assert evaluation["config"]["protocol"]["ifia"]["k"] == 8
        assert [r["protocol"] for r in store.leaderboard("synthetic")] == [_fp(eval_cfg)]


def test_the_protocol_line_names_ig_points_only_where_the_attacked_map_is_ig() -> None:
    # ig_steps reach integrated gradients only (attributions.explainer); the field stays in the fingerprint
    base = from_dict(EvalConfig, FAST_CFG)
    said = {}
    for name in ("ig", "integrated_gradients", "saliency", "smoothgrad"):
        cfg = replace(base, ifia=replace(base.ifia, attribution=name))
        protocol = protocol_lib.describe(cfg, DATA)
        said[name] = protocol_lib.summary(protocol)
        assert protocol["ifia"]["ig_steps"] == base.ifia.ig_steps
    assert all(f"{base.ifia.ig_steps} IG points" in said[n] for n in ("ig", "integrated_gradients"))
    assert not any("IG points" in said[n] for n in ("saliency", "smoothgrad"))
