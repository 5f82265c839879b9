"""The smoothing paper's evaluations (Tables 1 and 3), the ``seeded_correct`` sample selection, and the dry run of
``attrobust bench table NAME --dry-run`` with its cost estimate."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from typer.testing import CliRunner

from attrobust import data
from attrobust.cli import app
from attrobust.experiments import bench, cost, sampling
from attrobust.experiments.config import EvalConfig, TrainConfig, load_yaml
from attrobust.experiments.evaluate import evaluate
from attrobust.experiments.protocol import describe, lines
from conftest import make_tiny_cnn

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FMS = ("fms_table1_fmnist", "fms_table1_cifar10", "fms_table1_imagenette")

# ------------------------------------------------------------------ the smoothing paper's evaluations


@pytest.mark.parametrize("table", FMS)
def test_smoothing_tables_evaluate_what_the_paper_reports(table: str) -> None:
    evals = dict(bench.table_evaluations(table, "paper"))
    assert set(evals) == {"", "vg", "ig", "sg"}
    # appendix C, Table 3: benign accuracy on the clean test set and robust accuracy under PGD at eps 0.1 (PGD-100,
    # section 4.2.5); the paper runs no attribution attack
    main = evals[""]
    assert (main.n, main.skip_pgd, main.skip_ifia, main.metrics) == (None, False, True, [])
    assert (main.pgd.eps, main.pgd.steps, main.pgd.random_start) == (0.1, 100, True)
    # section 4.1: Gini, RIS/ROS/RRS and ROAD of VG, IG and SG maps, "aggregated for 1000 randomly selected test
    # images that the model accurately classifies"; appendix I.3: "We set k = 5" (ROAD removal steps)
    methods = {label: evals[label].ifia.attribution for label in ("vg", "ig", "sg")}
    assert methods == {"vg": "saliency", "ig": "ig", "sg": "smoothgrad"}
    for label in ("vg", "ig", "sg"):
        ev = evals[label]
        assert (ev.n, ev.sample, ev.skip_pgd, ev.skip_ifia) == (1000, "seeded_correct", True, True)
        assert {"gini", "ris", "ros", "rrs", "road"} <= set(ev.metrics)
        assert len(ev.suite.road_fractions) == 5
        # section 4.1: ROAD_AUC averages the drop of "the classifier's output probability for the originally
        # predicted class"
        assert ev.suite.road_output == "probability"
    # nothing of the smoothing tables attacks an attribution, on either budget
    assert all(ev.skip_ifia for _, ev in bench.table_evaluations(table, "cpu"))
    text = (CONFIGS / table / "_eval.vg.yaml").read_text()
    assert "not stated; ours: which five fractions" in text


def test_smoothing_defaults_of_imagenette_still_leave_ifia_without_budget() -> None:
    from attrobust.experiments.protocol import eval_defaults

    cfg = eval_defaults("imagenette")
    assert (cfg.skip_ifia, cfg.ifia.k, cfg.pgd.eps, cfg.pgd.steps) == (False, None, 0.1, 100)


# ------------------------------------------------------------------ seeded_correct


def _model_and_data() -> tuple[nn.Module, data.ImageDataset]:
    ds = data.load("synthetic", "test", n=60, size=8, num_classes=3)
    return make_tiny_cnn(num_classes=3, size=8, seed=3), ds


def _correct(model: nn.Module, ds: data.ImageDataset) -> torch.Tensor:
    with torch.no_grad():
        return model(ds.images).argmax(1) == ds.labels


def test_seeded_correct_draws_correctly_classified_images_with_the_seed() -> None:
    model, ds = _model_and_data()
    correct = _correct(model, ds)
    n = int(correct.sum()) // 2
    assert n >= 3
    cfg = EvalConfig(n=n, sample="seeded_correct", skip_pgd=True, batch_size=7)
    idx = sampling.seeded_correct(model, ds, cfg)
    assert len(idx) == n and bool(correct[idx].all()) and len(set(idx.tolist())) == n
    assert torch.equal(idx, sampling.seeded_correct(model, ds, EvalConfig(n=n, sample="seeded_correct", skip_pgd=True)))
    draws = {tuple(sampling.seeded_correct(model, ds, EvalConfig(n=n, sample="seeded_correct", skip_pgd=True, seed=s))
                   .tolist()) for s in range(4)}  # fmt: skip
    assert len(draws) > 1
    first = correct.nonzero().flatten()[:n]
    assert any(not torch.equal(torch.tensor(d).sort().values, first) for d in draws)  # not the first n correct
    assert model.training is False


def test_seeded_correct_warns_when_too_few_are_correct_and_needs_skip_pgd() -> None:
    model, ds = _model_and_data()
    total = int(_correct(model, ds).sum())
    with pytest.warns(UserWarning, match=f"classifies only {total} of the 60"):
        idx = sampling.seeded_correct(model, ds, EvalConfig(n=59, sample="seeded_correct", skip_pgd=True, seed=9))
    assert len(idx) == total
    with pytest.raises(ValueError, match="skip_pgd: expected true with sample 'seeded_correct'"):
        EvalConfig(n=5, sample="seeded_correct")


def test_evaluate_on_seeded_correct_reports_no_accuracy(tmp_path: Path) -> None:
    model, ds = _model_and_data()
    cfg = EvalConfig(n=4, sample="seeded_correct", skip_pgd=True, skip_ifia=True, metrics=["gini"], batch_size=2,
                     ifia={"attribution": "saliency"})  # fmt: skip
    res = evaluate(model, cfg, dataset=ds, progress=False, db=False)
    assert res["summary"]["natural_acc"] is None and res["summary"]["n"] == 4
    assert res["per_example"]["index"] == sampling.seeded_correct(model, ds, cfg).tolist()
    assert all(res["per_example"]["natural_correct"])
    assert "4 correctly classified samples drawn with the seed" in lines(describe(cfg, {"name": "synthetic"}))[0]


# ------------------------------------------------------------------ the dry run and its cost estimate


@pytest.mark.parametrize("table", bench.table_names())
def test_every_table_runs_its_models_in_the_papers_row_order(table: str) -> None:
    runs, _, _ = bench.table_configs(table, "runs", "paper")
    models = [m for m, _ in runs]
    assert models == bench.table_models(table) and sorted(models) == sorted(set(models))
    # the rows of each paper's table, top to bottom
    if table.startswith("fms_table1_"):  # the smoothing paper's Table 3: N, A, then the +A smoothing models
        assert models == ["n", "a", "m1", "m2", "g", "e", "ng"]
    elif table.startswith("igr_table2_"):  # IGR Table 2
        assert models == ["natural", "ig_norm", "ig_sum_norm", "adv_aat", "art", "ssr", "pgd_at", "pgd_at_igr",
                          "trades", "trades_igr", "mart", "mart_igr"]  # fmt: skip
    elif table in ("bounds_table7_mnist", "bounds_table8_cifar10"):  # bounds paper appendix D.2, Tables 7 and 8
        assert models == ["pgd_at", "ig_norm", "adv_aat", "art", "trades", "trades_igr"]
    elif table == "bounds_table9_flower":  # appendix D.3, Table 9
        assert models == ["pgd_at", "adv_aat", "trades", "trades_igr"]
    elif table == "art_table1_gtsrb":  # ART Table 1, then the RAR/IGR rows it adds
        assert models == ["natural", "pgd_at", "art", "ig_norm", "ig_sum_norm"]
    elif table == "rar_fmnist":  # RAR appendix Table 4 (NATURAL, Madry et al., IG-SUM-NORM); no IG-NORM row
        assert models == ["natural", "pgd_at", "ig_sum_norm", "ig_norm"]


def test_chosen_models_keep_the_order_given(tmp_path: Path) -> None:
    runs, _, _ = bench.table_configs("rar_mnist", tmp_path, "cpu", models=["pgd_at", "natural"])
    assert [m for m, _ in runs] == ["pgd_at", "natural"]


@pytest.mark.parametrize("table", bench.table_names())
def test_dry_run_of_every_table_prints_settings_and_cost_and_writes_nothing(
    table: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out: list[str] = []
    got = bench.dry_run(table, "paper", echo=out.append)
    text = "\n".join(out)
    runs, _, _ = bench.table_configs(table, "runs", "paper")
    evals = bench.table_evaluations(table, "paper")
    for model, cfg in runs:
        assert f"run {model} ({cfg.name}):" in text and f"objective {cfg.objective.name}" in text
        if cfg.steps is not None:
            assert got["train"][model].images == cfg.steps * cfg.batch_size
        for label, _ in evals:
            assert got["evaluate"][(model, label)].passes > 0
    assert text.count("protocol ") == len(evals) and "nothing is trained, evaluated or written" in text
    assert 0 < got["hours"] < float("inf")
    assert os.listdir(tmp_path) == []


def test_dry_run_from_the_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["bench", "table", "rar-mnist", "--budget", "cpu", "--dry-run",
                                      "--models", "natural"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "run natural (rar_mnist_natural_cpu):" in result.output and "total: about" in result.output
    assert "run pgd_at" not in result.output and os.listdir(tmp_path) == []


def test_cost_counts_passes_from_the_protocol() -> None:
    cfg = load_yaml(TrainConfig, CONFIGS / "igr_table2_cifar10" / "trades_igr.yaml")
    params = cfg.objective.params
    assert cost.train_passes("pgd_at", params) == 1 + params["steps"]
    assert cost.train_passes("trades+igr", params) == cost.train_passes("trades", params) + 4 * params["ig_steps"]
    est = cost.training(cfg, "cuda")
    assert est.images == cfg.epochs * (50_000 // cfg.batch_size) * cfg.batch_size
    ev = bench.table_configs("igr_table2_cifar10", "runs", "paper")[1]
    ifia = ev.ifia.restarts * ev.ifia.steps * 3 * ev.ifia.ig_steps
    assert cost.eval_passes(ev) == pytest.approx(1 / 3 + ev.pgd.steps + ifia)
    assert cost.evaluation(ev, cfg, "cuda").images == ev.n


def test_cost_of_ifia_counts_the_attacked_maps_passes() -> None:
    # RAR appendix Table 4 attacks simple-gradient maps: one pass per map, whatever ig_steps says (unused there)
    sg = dict(bench.table_evaluations("rar_mnist", "paper"))["sg"]
    assert sg.ifia.attribution == "saliency" and sg.skip_pgd
    assert cost.eval_passes(sg) == pytest.approx(1 / 3 + sg.ifia.restarts * sg.ifia.steps * 3)
    smooth = replace(sg, ifia=replace(sg.ifia, attribution="smoothgrad"))
    assert cost.eval_passes(smooth) == pytest.approx(1 / 3 + sg.ifia.restarts * sg.ifia.steps * 3 * 50)
    curves = replace(sg, skip_ifia=True, metrics=["deletion", "insertion"])
    assert cost.eval_passes(curves) == pytest.approx(1 / 3 + 2 * 11 / 3)  # 11 fractions, a forward pass each


@pytest.mark.parametrize(("table", "model"), [("rar_mnist", "natural"), ("fms_table1_cifar10", "m2"),
                                              ("art_table1_flower", "ig_norm")])  # fmt: skip
def test_forward_macs_match_torch_flop_counter(table: str, model: str) -> None:
    cfg = load_yaml(TrainConfig, CONFIGS / table / f"{model}.yaml")
    shape = cost.data_shape({"name": cfg.data.name, "kwargs": cfg.data.kwargs})
    from attrobust import models

    net = models.create(cfg.model.name, shape.classes, in_channels=shape.channels, input_size=shape.side,
                        **cfg.model.kwargs).eval()  # fmt: skip
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        net(torch.zeros(1, shape.channels, shape.side, shape.side))
    counted = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    convs_and_linears = sum(v for k, v in counted.items() if "convolution" in k or k.endswith(("mm", "addmm")))
    assert cost.forward_macs(cfg, shape) == convs_and_linears // 2


def test_data_shape_follows_the_data_section() -> None:
    flower = load_yaml(TrainConfig, CONFIGS / "art_table1_flower" / "natural.yaml")
    shape = cost.data_shape({"name": "flower17", "kwargs": flower.data.kwargs,
                             "balance_by_augmentation": flower.data.balance_by_augmentation})  # fmt: skip
    assert (shape.train, shape.test, shape.side) == (17 * 1000, 17 * 8, 128)
    assert cost.data_shape({"name": "mnist", "train_subset": 500}).train == 500
    with pytest.raises(ValueError, match=r"data\.name: expected one of"):
        cost.data_shape({"name": "cub"})


def tiny_table(tmp_path: Path, n: int) -> Path:
    """A table ``tiny_table`` under ``tmp_path/presets``: one tiny natural model, an ``_eval.yaml`` of ``n``
    synthetic images with PGD only; returns its folder."""
    folder = tmp_path / "presets" / "tiny_table"
    folder.mkdir(parents=True)
    (folder / "natural.yaml").write_text(
        "# a tiny run\nname: tiny_table_natural\ndata: {name: synthetic, kwargs: {n: 48, size: 8, num_classes: 3}}\n"
        "model: {name: small_cnn}\nsteps: 3\nbatch_size: 8\nlog_every: 1\n")  # fmt: skip
    (folder / "_eval.yaml").write_text(f"n: {n}\nbatch_size: 6\nskip_ifia: true\npgd: {{eps: 0.1, step_size: 0.05, "
                                       "steps: 2}\nexamples: 0\n")  # fmt: skip
    return folder


def test_a_table_measuring_only_metrics_prints_them(tmp_path: Path) -> None:
    # the bounds tables (paper 004, Tables 7-9) run no PGD and no IFIA: their table is the bounds' means
    folder = tiny_table(tmp_path, n=4)
    (folder / "_eval.yaml").write_text("n: 4\nbatch_size: 4\nskip_pgd: true\nskip_ifia: true\nexamples: 0\n"
                                       "ifia: {eps: 0.1, beta: 5.0}\n"
                                       "metrics: [l2_bound, modified_bound]\n")  # fmt: skip
    res = bench.table("tiny_table", tmp_path / "runs", "paper", presets=tmp_path / "presets", progress=False,
                      echo=lambda _: None, report=False)  # fmt: skip
    header, _, row = res["table"].splitlines()
    assert [c.strip() for c in header.split("|")] == ["model", "n", "l2_bound", "modified_bound"]
    summary = res["results"]["natural"]["summary"]["metrics"]
    assert [c.strip() for c in row.split("|")] == ["natural", "4", f"{summary['l2_bound']['mean']:.4f}",
                                                   f"{summary['modified_bound']['mean']:.4f}"]  # fmt: skip


def test_a_table_with_further_evaluations_runs_each_and_reports(tmp_path: Path) -> None:
    folder = tiny_table(tmp_path, n=12)
    (folder / "_eval.vg.yaml").write_text("extends: _eval.yaml\nn: 5\nsample: seeded_correct\nskip_pgd: true\n"
                                          "ifia: {attribution: saliency}\nmetrics: [gini, road]\n")  # fmt: skip
    out: list[str] = []
    res = bench.table("tiny_table", tmp_path / "runs", "paper", presets=tmp_path / "presets", progress=False,
                      echo=out.append)  # fmt: skip
    assert set(res["results"]) == {"natural", "natural [vg]"}
    assert res["results"]["natural [vg]"]["summary"]["natural_acc"] is None
    assert res["results"]["natural"]["summary"]["natural_acc"] is not None
    assert [c.strip() for c in res["tables"]["vg"].splitlines()[0].split("|")] == ["model", "n", "gini", "road"]
    text = "\n".join(out)
    assert "[vg] protocol" in text and "correctly classified samples drawn with the seed" in text
    assert res["report"] is not None and res["report"][0].is_file()
    again = bench.table("tiny_table", tmp_path / "runs", "paper", presets=tmp_path / "presets", progress=False,
                        echo=out.append, report=False)  # fmt: skip
    assert again["tables"] == res["tables"]  # both evaluations reused, each from its own results file


def test_a_table_says_how_many_images_started_the_top_k_attack_at_a_flat_point(tmp_path: Path) -> None:
    # k = all 64 pixels: the normalised mass on the clean top-k is 1 wherever the attack goes, so every attacked
    # image starts (and stays) at a flat point; the table says so for the fresh evaluation and the reused one
    folder = tiny_table(tmp_path, n=6)
    (folder / "_eval.yaml").write_text("n: 6\nbatch_size: 6\nskip_pgd: true\nexamples: 0\nifia: {attribution: "
                                       "saliency, k: 64, eps: 0.1, step_size: 0.05, steps: 2,\n"
                                       "       restarts: 1}\n")  # fmt: skip
    for _ in range(2):
        out: list[str] = []
        res = bench.table("tiny_table", tmp_path / "runs", "paper", presets=tmp_path / "presets", progress=False,
                          echo=out.append, report=False)  # fmt: skip
        stats = res["results"]["natural"]["summary"]["ifia"]
        assert stats["attacked"] > 0 and stats["flat_start"] == stats["attacked"]
        said = [line for line in out if "flat point" in line]
        assert said == [f"natural: note: {stats['attacked']} of {stats['attacked']} attacked images started the top-k"
                        " attack at a flat point" + said[0].split("flat point", 1)[1]]  # fmt: skip


def test_a_further_evaluation_that_attacks_gets_the_papers_columns_and_its_published_figures(tmp_path: Path) -> None:
    # the RAR appendix's Table 4: the table's IFIA on simple-gradient maps, published as "<model> [sg]"
    folder = tiny_table(tmp_path, n=6)
    (folder / "_eval.sg.yaml").write_text("extends: _eval.yaml\nskip_pgd: true\nskip_ifia: false\nifia: "
                                          "{attribution: saliency, k: 8, eps: 0.1, step_size: 0.05, steps: 2, "
                                          "restarts: 1}\n")  # fmt: skip
    (folder / "_published.yaml").write_text('natural: {natural_acc: 0.9}\n"natural [sg]": {topk: 0.1664, '
                                            'kendall: 0.0107}\n"other [sg]": {topk: 0.5}\n')  # fmt: skip
    _, _, published = bench.table_configs("tiny_table", tmp_path / "runs", "paper", tmp_path / "presets")
    assert set(published) == {"natural", "natural [sg]"}  # a further row of a model not run is left out
    res = bench.table("tiny_table", tmp_path / "runs", "paper", presets=tmp_path / "presets", progress=False,
                      echo=lambda _: None)  # fmt: skip
    header = [c.strip() for c in res["tables"]["sg"].splitlines()[0].split("|")]
    assert header == ["model", "natural acc", "PGD acc", "top-k", "Kendall", "no-valid"]
    summary = res["results"]["natural [sg]"]["summary"]
    assert summary["pgd_acc"] is None and summary["topk"] is not None
    row = res["tables"]["sg"].splitlines()[2]
    assert f"{summary['topk']:.4f}" in row and f"{summary['kendall']:.4f}" in row
    md = (res["report"][0].parent / "report.md").read_text()
    sg_line = next(line for line in md.splitlines() if line.startswith("| natural \\[sg\\] |"))  # markdown-escaped
    assert "0.1664" in sg_line and f"{summary['topk'] - 0.1664:+.4f}" in sg_line
