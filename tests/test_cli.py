"""The command line: list, train, evaluate, bench quickstart/demo, friendly errors (exit code 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from attrobust.cli import FLAG_KEYS, app, flag_overrides, registries
from attrobust.experiments import bench

runner = CliRunner()

TINY_TRAIN = {
    "name": "tiny",
    "data": {"name": "synthetic", "kwargs": {"n": 64, "size": 8, "num_classes": 3}, "test_subset": 32},
    "model": {"name": "small_cnn"},
    "optim": {"lr": 1e-2},
    "steps": 4,
    "batch_size": 16,
}
FAST_EVAL = [
    "--n", "12", "--k", "8", "--eps", "0.1", "--step-size", "0.05", "--steps", "2", "--pgd-steps", "2",
    "--ig-steps", "3", "--restarts", "1", "--beta", "5", "--quiet",
]  # fmt: skip


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    cfg = write_yaml(root / "tiny.yaml", {**TINY_TRAIN, "out_dir": str(root / "runs")})
    result = runner.invoke(app, ["train", str(cfg), "--quiet"])
    assert result.exit_code == 0, result.output
    return root / "runs" / "tiny" / "model.pt"


def test_list_shows_every_registry() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0, result.output
    for kind, names in registries().items():
        assert names, kind
        line = next(line for line in result.output.splitlines() if line.startswith(kind + ":"))
        assert all(name in line for name in names)
    assert "pgd_at" in result.output and "small_cnn" in result.output and "synthetic" in result.output


def test_train_writes_the_run_and_reuses_it(trained: Path, tmp_path: Path) -> None:
    assert trained.is_file() and (trained.parent / "config.yaml").is_file()
    cfg = trained.parent.parent.parent / "tiny.yaml"
    again = runner.invoke(app, ["train", str(cfg), "--quiet"])
    assert again.exit_code == 0 and "reused" in again.output
    out = tmp_path / "other"
    forced = runner.invoke(app, ["train", str(cfg), "--quiet", "--set", f"out_dir={out}", "--set", "steps=2"])
    assert forced.exit_code == 0, forced.output
    assert "trained 2 steps" in forced.output and (out / "tiny" / "model.pt").is_file()
    changed = runner.invoke(app, ["train", str(cfg), "--quiet", "--set", "seed=3"])
    assert changed.exit_code == 2 and "--force" in changed.output
    assert runner.invoke(app, ["train", str(cfg), "-q", "--set", f"out_dir={out}", "--resume"]).exit_code == 2


def test_bad_config_is_a_friendly_error(tmp_path: Path) -> None:
    bad = write_yaml(tmp_path / "bad.yaml", {**TINY_TRAIN, "optimizer": {"lr": 1}})
    result = runner.invoke(app, ["train", str(bad)])
    assert result.exit_code == 2
    assert "error:" in result.output and "unknown config key optimizer" in result.output
    assert "Traceback" not in result.output
    missing = runner.invoke(app, ["train", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2 and "config file not found" in missing.output
    bad_set = runner.invoke(app, ["train", str(bad), "--set", "lr"])
    assert bad_set.exit_code == 2
    bad_model = write_yaml(tmp_path / "m.yaml", {**TINY_TRAIN, "model": {"name": "resnet1000"}})
    result = runner.invoke(app, ["train", str(bad_model), "-q", "--set", f"out_dir={tmp_path}"])
    assert result.exit_code == 2 and "unknown model 'resnet1000'" in result.output


def test_evaluate_prints_the_table_row_and_saves_json(trained: Path, tmp_path: Path) -> None:
    out = tmp_path / "res.json"
    result = runner.invoke(app, ["evaluate", str(trained), *FAST_EVAL, "--out", str(out)])
    assert result.exit_code == 0, result.output
    header = result.output.splitlines()[0]
    for col in ("natural acc", "PGD acc", "top-k", "Kendall", "no-valid"):
        assert col in header
    saved = json.loads(out.read_text())
    cfg = saved["eval_config"]
    assert cfg["n"] == 12 and cfg["pgd"]["eps"] == cfg["ifia"]["eps"] == 0.1
    assert (cfg["ifia"]["k"], cfg["ifia"]["steps"], cfg["pgd"]["steps"], cfg["ifia"]["beta"]) == (8, 2, 2, 5.0)
    assert saved["summary"]["topk"] is not None and saved["summary"]["pgd_acc"] is not None


def test_evaluate_config_file_set_and_attack_choice(trained: Path, tmp_path: Path) -> None:
    ev = write_yaml(tmp_path / "ev.yaml", {"n": 10, "pgd": {"eps": 0.1, "step_size": 0.05}, "ifia": {"k": 4}})
    out = tmp_path / "r.json"
    args = ["evaluate", str(trained), "--config", str(ev), "--set", "pgd.steps=1", "--attack", "pgd", "-q"]
    result = runner.invoke(app, [*args, "--out", str(out)])
    assert result.exit_code == 0, result.output
    saved = json.loads(out.read_text())
    assert saved["eval_config"]["n"] == 10 and saved["eval_config"]["ifia"]["k"] == 4
    assert saved["eval_config"]["pgd"]["steps"] == 1
    assert saved["summary"]["topk"] is None and saved["summary"]["pgd_acc"] is not None
    row = result.output.splitlines()[2]
    assert row.split("|")[3].strip() == "-"
    # flags win over --config and --set; another protocol's results go beside the first ones
    result = runner.invoke(app, [*args, "--n", "5", "--out", str(out)])
    other = Path(result.output.splitlines()[-1].removeprefix("results: "))
    assert other == out.with_name(f"r-{json.loads(other.read_text())['protocol_fingerprint']}.json")
    assert json.loads(other.read_text())["eval_config"]["n"] == 5
    # synthetic data has no paper protocol: the generic settings (no budget) before the file
    assert saved["eval_config"]["ifia"]["restarts"] == 3


def test_evaluate_errors_exit_2(trained: Path, tmp_path: Path) -> None:
    for args in (
        ["evaluate", str(tmp_path / "none.pt")],
        ["evaluate", str(trained), "--set", "ifia.kk=3"],
        ["evaluate", str(trained), "--attack", "everything"],
        ["evaluate", str(trained), "--n", "100000", "-q"],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "error:" in result.output and "Traceback" not in result.output


def tiny_presets(root: Path) -> Path:
    presets = root / "presets"
    presets.mkdir()
    write_yaml(presets / "quickstart_natural.yaml", {**TINY_TRAIN, "name": "quickstart_natural"})
    write_yaml(
        presets / "quickstart_pgd_at.yaml",
        {**TINY_TRAIN, "name": "quickstart_pgd_at",
         "objective": {"name": "pgd_at", "params": {"eps": 0.1, "step_size": 0.05, "steps": 2}}},
    )  # fmt: skip
    fine_tuned = {
        "quickstart_trades_igr": {"name": "trades+igr", "params": {"beta": 1.0, "ig_steps": 2, "eps": 0.1,
                                                                  "step_size": 0.05, "steps": 1}},
        "quickstart_ig_sum_norm": {"name": "ig_sum_norm", "params": {"ig_steps": 2, "attack_ig_steps": 1, "eps": 0.1,
                                                                    "step_size": 0.05, "steps": 1}},
        "quickstart_art": {"name": "art", "params": {"beta": 5.0, "eps": 0.1, "step_size": 0.05, "steps": 1}},
    }  # fmt: skip
    for name, objective in fine_tuned.items():
        write_yaml(presets / f"{name}.yaml", {**TINY_TRAIN, "name": name, "steps": 2, "objective": objective})
    write_yaml(
        presets / "quickstart_median_pgd_at.yaml",
        {**TINY_TRAIN, "name": "quickstart_median_pgd_at", "model": {"name": "small_cnn", "kwargs": {
            "smoothing": [{"kind": "median"}]}},
         "objective": {"name": "pgd_at", "params": {"eps": 0.1, "step_size": 0.05, "steps": 1}}},
    )  # fmt: skip
    write_yaml(
        presets / "quickstart_eval.yaml",
        {"n": 10, "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
         "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
         "metrics": ["gini"]},
    )  # fmt: skip
    return presets


def test_bench_quickstart_trains_evaluates_and_reuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTROBUST_CONFIGS", str(tiny_presets(tmp_path)))
    out = tmp_path / "runs"
    first = runner.invoke(app, ["bench", "quickstart", "--out-dir", str(out), "-q"])
    assert first.exit_code == 0, first.output
    labels = ("natural ", "pgd_at ", "trades+igr ", "ig_sum_norm ", "art ", "median+pgd_at ")
    table = [line for line in first.output.splitlines() if line.startswith(labels)]
    assert len(table) == 6 and "trained" in first.output
    assert "Gini" in first.output
    for name in ("quickstart_natural", "quickstart_pgd_at", "quickstart_art", "quickstart_median_pgd_at"):
        assert (out / name / "model.pt").is_file() and (out / name / "results.json").is_file()
    report = out / "quickstart_report" / "report.html"
    assert first.output.strip().endswith(f"report: {report}") and report.is_file()
    second = runner.invoke(app, ["demo", "--out-dir", str(out), "-q"])
    assert second.exit_code == 0, second.output
    assert "trained" not in second.output and second.output.count("reused") == 12
    again = [line for line in second.output.splitlines() if line.startswith(labels)]
    assert again == table
    bad = runner.invoke(app, ["bench", "quickstart", "--out-dir", str(out), "--budget", "tpu"])
    assert bad.exit_code == 2 and "budget" in bad.output


def test_quickstart_budgets_resolve_from_the_repository_presets(tmp_path: Path) -> None:
    runs, ev = bench.quickstart_configs(tmp_path, "cpu")
    assert [label for label, _ in runs] == ["natural", "pgd_at", "trades+igr", "ig_sum_norm", "art", "median+pgd_at"]
    assert [cfg.init for _, cfg in runs[2:5]] == [str(tmp_path / "quickstart_natural")] * 3
    assert runs[5][1].model.kwargs["smoothing"] == [{"kind": "median", "kernel": 3}]
    assert runs[5][1].init == str(tmp_path / "quickstart_pgd_at")
    assert all(cfg.model.name == "small_cnn" and cfg.data.name == "mnist" for _, cfg in runs)
    assert all(cfg.out_dir == str(tmp_path) for _, cfg in runs)
    assert runs[1][1].objective.name == "pgd_at" and runs[1][1].objective.params["eps"] == 0.3
    assert ev.pgd.eps == ev.ifia.eps == 0.3 and ev.ifia.attribution == "ig" and ev.ifia.k == 200
    full_runs, full_ev = bench.quickstart_configs(tmp_path, "full")
    assert full_ev.n == 1000 and full_ev.ifia.steps == 100 and full_ev.ifia.restarts == 3
    assert full_runs[1][1].objective.params["steps"] == 40 and full_runs[1][1].data.train_subset is None
    assert [cfg.name for _, cfg in full_runs][:2] == ["quickstart_natural_full", "quickstart_pgd_at_full"]
    assert full_runs[2][1].init == str(tmp_path / "quickstart_natural_full")


def test_options_map_onto_config_keys_through_one_table() -> None:
    assert flag_overrides(eps=0.1, k=5, n=None, metrics="gini, ssim") == {
        "pgd": {"eps": 0.1}, "ifia": {"eps": 0.1, "k": 5, "eval_k": 5}, "metrics": ["gini", "ssim"]}  # fmt: skip
    assert flag_overrides() == {} and flag_overrides(metrics="") == {"metrics": []}
    assert all(key.split(".")[0] in ("n", "batch_size", "pgd", "ifia") for keys in FLAG_KEYS.values() for key in keys)


def test_k_option_sets_the_reported_k_too() -> None:
    """The RAR preset reports the top-100 of a top-200 attack; `--k 20` must not keep reporting the top-100."""
    from attrobust.cli import eval_config

    preset = eval_config("mnist", None, [], {})
    assert preset.ifia.eval_k is not None and preset.ifia.eval_k != preset.ifia.k  # the preset's own split
    cfg = eval_config("mnist", None, [], flag_overrides(k=20))
    assert (cfg.ifia.k, cfg.ifia.eval_k) == (20, 20)


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "attrobust", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    for command in ("list", "train", "evaluate", "bench", "demo"):
        assert command in result.stdout


def test_bench_table_reproduces_a_table_with_published_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    presets = tmp_path / "presets"
    folder = presets / "tiny_table"
    folder.mkdir(parents=True)
    write_yaml(folder / "_base.yaml", {k: v for k, v in TINY_TRAIN.items() if k != "name"})
    write_yaml(folder / "_eval.yaml", {"n": 500, "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 50},
                                       "ifia": {"eps": 0.1, "step_size": 0.05}})  # synthetic data: no defaults
    write_yaml(folder / "_eval_cpu.yaml", {"n": 8, "pgd": {"steps": 2},
                                           "ifia": {"k": 8, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0}})
    write_yaml(folder / "_published.yaml", {"natural": {"topk": 0.5, "natural_acc": 0.9}})
    for model, objective in (("natural", {"name": "natural"}),
                             ("pgd_at", {"name": "pgd_at", "params": {"eps": 0.1, "step_size": 0.05, "steps": 1}})):
        write_yaml(folder / f"{model}.yaml", {"extends": "_base.yaml", "name": f"tiny_table_{model}", "steps": 500,
                                              "objective": objective})
        write_yaml(folder / f"{model}_cpu.yaml", {"extends": f"{model}.yaml", "name": f"tiny_table_{model}_cpu",
                                                  "steps": 3})  # fmt: skip
    monkeypatch.setenv("ATTROBUST_CONFIGS", str(presets))
    out = tmp_path / "runs"
    listed = runner.invoke(app, ["bench", "tables"])
    assert listed.exit_code == 0 and "tiny_table" in listed.output and "natural, pgd_at" in listed.output
    result = runner.invoke(app, ["bench", "table", "tiny-table", "--out-dir", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "tiny_table_natural_cpu" / "model.pt").is_file()
    results = json.loads((out / "tiny_table_natural_cpu" / "results.json").read_text())
    assert results["eval_config"]["n"] == 8 and results["eval_config"]["pgd"]["steps"] == 2
    html = (out / "tiny_table_cpu_report" / "report.html").read_text()
    assert "tiny_table" in html and "0.5000" in html
    only = runner.invoke(app, ["bench", "table", "tiny_table", "--out-dir", str(out), "--models", "pgd_at", "-q"])
    assert only.exit_code == 0 and "reused" in only.output and "natural:" not in only.output
    for args in (["bench", "table", "nope"], ["bench", "table", "tiny_table", "--models", "x"],
                 ["bench", "table", "tiny_table", "--budget", "tpu"]):  # fmt: skip
        bad = runner.invoke(app, args)
        assert bad.exit_code == 2 and "error:" in bad.output


def test_bench_tables_lists_the_models_in_the_papers_row_order() -> None:
    result = runner.invoke(app, ["bench", "tables"])
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split(None, 1)[1] for line in result.output.splitlines() if line.strip()}
    assert lines["rar_mnist"] == "ig_norm, natural, pgd_at, ig_sum_norm"
    assert lines["fms_table1_fmnist"] == "n, a, m1, m2, g, e, ng"


def test_paper_table_presets_resolve(tmp_path: Path) -> None:
    runs, ev, published = bench.table_configs("rar-mnist", tmp_path, "cpu")
    # the paper's row order: appendix Table 3 (IG-NORM), then Table 4 (NATURAL, Madry et al., IG-SUM-NORM)
    assert [m for m, _ in runs] == ["ig_norm", "natural", "pgd_at", "ig_sum_norm"]
    assert all(cfg.name.endswith("_cpu") and cfg.model.name == "small_cnn" for _, cfg in runs)
    assert ev.n == 100 and ev.ifia.k == 200 and ev.ifia.eps == 0.3
    assert published["ig_norm"] == {"natural_acc": 0.9874, "pgd_acc": 0.8143, "topk": 0.7136, "kendall": 0.2841}
    # the rows of the further evaluation _eval.sg.yaml (appendix Table 4) under "<model> [sg]"
    assert set(published) == {f"{m}{label}" for m in ("ig_norm", "ig_sum_norm", "natural", "pgd_at")
                              for label in ("", " [sg]")} - {"ig_norm [sg]"}  # fmt: skip
    paper_runs, paper_ev, _ = bench.table_configs("art_table1_cifar10", tmp_path, "paper")
    assert paper_ev.ifia.k == 100 and paper_ev.ifia.steps == 50 and paper_runs[0][1].model.kwargs["width"] == 10
    assert set(bench.table_names()) >= {"rar_mnist", "igr_table2_mnist", "art_table1_flower", "fms_table1_fmnist"}
