"""The evaluation suite: ``evaluate(..., metrics=[...])`` pairs every metric with the evaluation's attribution
and attacks, per example, summarised, merged across batches, with clear errors for what cannot apply."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from attrobust import data, metrics
from attrobust.attributions import integrated_gradients
from attrobust.cli import app
from attrobust.data.boxed import BoxedImageDataset
from attrobust.experiments import suite
from attrobust.experiments.config import EvalConfig, TrainConfig, from_dict
from attrobust.experiments.evaluate import evaluate
from attrobust.experiments.train import train

FAST = {
    "n": 10,
    "batch_size": 4,
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
    "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
    "suite": {"stability_samples": 2, "road_fractions": [0.2, 0.5], "ssim_sigmas": [0.1, 0.3]},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = from_dict(TrainConfig, {
        "name": "tiny", "data": {"name": "synthetic", "kwargs": {"n": 96, "size": 8, "num_classes": 3}},
        "model": {"name": "small_cnn"}, "optim": {"name": "adam", "lr": 1e-2}, "steps": 12, "batch_size": 16,
        "out_dir": str(out)})  # fmt: skip
    return train(cfg, progress=False, db=False).model_path


@pytest.fixture(scope="module")
def all_results(checkpoint: Path) -> dict:
    cfg = from_dict(EvalConfig, {**FAST, "metrics": ["all"]})
    return evaluate(checkpoint, cfg, progress=False, out=checkpoint.parent / "all.json", db=False)


def test_all_runs_every_applicable_metric_per_example(all_results: dict) -> None:
    columns = all_results["per_example"]["metrics"]
    expected = [m for m in suite.SUITE_METRICS if m not in suite.NEEDS_BOXES]
    for name in expected:
        key = name if name != "ssim_noise" else "ssim_noise_curve"
        assert key in columns, name
        assert len(columns[key]) == 10, name
    assert all(f"corruption_accuracy/{c}" in columns for c in ("fog", "gaussian_noise"))
    assert len(columns["road_curve"][0]) == 2 and len(columns["ssim_noise_curve"][0]) == 2
    assert all_results["metrics_left_out"] == ["gt_known_loc: the dataset has no bounding boxes",
                                               "top1_loc: the dataset has no bounding boxes"]  # fmt: skip
    stats = all_results["summary"]["metrics"]["gini"]
    assert set(stats) == {"count", "mean", "std", "median", "q25", "q75"} and stats["count"] == 10
    assert all_results["road"]["fractions"] == [0.2, 0.5] and "ig" in all_results["road"]["accuracy"]
    assert all_results["ssim_noise"]["sigma"] == [0.1, 0.3]


def test_pair_metrics_cover_exactly_the_attacked_examples(all_results: dict) -> None:
    per = all_results["per_example"]
    attacked = set(per["ifia"]["index"])
    for position, index in enumerate(per["index"]):
        value = per["metrics"]["cosine"][position]
        assert (value is not None) == (index in attacked)
    assert all(v is not None for v in per["metrics"]["gini"])


def test_suite_values_equal_the_metric_functions(checkpoint: Path, all_results: dict) -> None:
    from attrobust import models

    model, _ = models.load(checkpoint)
    model.eval()
    ds = data.load("synthetic", "test", n=96, size=8, num_classes=3)
    x, y = ds.images[:4], ds.labels[:4]
    maps = integrated_gradients(model, x, y, steps=3)
    gini = metrics.gini(maps).double()
    torch.testing.assert_close(torch.tensor(all_results["per_example"]["metrics"]["gini"][:4], dtype=torch.float64),
                               gini, rtol=1e-5, atol=1e-7)  # fmt: skip
    align = metrics.image_gradient_alignment(model, x, y).double()
    got = torch.tensor(all_results["per_example"]["metrics"]["image_gradient_alignment"][:4], dtype=torch.float64)
    torch.testing.assert_close(got, align, rtol=1e-5, atol=1e-7)


def test_goodman_kruskal_gamma_of_kendall_and_cosine_is_summarised(all_results: dict) -> None:
    gamma = all_results["summary"]["metrics"].get("gamma_kendall_cosine")
    assert gamma is None or (-1.0 <= gamma <= 1.0 and not math.isnan(gamma))


def test_resolve_rejects_unknown_and_inapplicable_metrics() -> None:
    cfg = EvalConfig()
    with pytest.raises(ValueError, match="unknown nope"):
        suite.resolve(["nope"], cfg, False)
    with pytest.raises(ValueError, match="bounding boxes"):
        suite.resolve(["gt_known_loc"], cfg, False)
    no_ifia = from_dict(EvalConfig, {"skip_ifia": True})
    with pytest.raises(ValueError, match="IFIA is skipped"):
        suite.resolve(["ssim"], no_ifia, False)
    chosen, notes = suite.resolve(["all"], no_ifia, True)
    assert "ssim" not in chosen and "gt_known_loc" in chosen and any("IFIA" in n for n in notes)
    assert suite.resolve(["gini", "gini"], cfg, False) == (["gini"], [])


def test_localisation_runs_on_a_dataset_with_boxes(checkpoint: Path) -> None:
    ds = data.load("synthetic", "test", n=12, size=8, num_classes=3)
    boxes = torch.tensor([[0.0, 0.0, 4.0, 4.0]]).repeat(12, 1)
    boxed = BoxedImageDataset(ds.images, ds.labels, ds.classes, name="boxed", boxes=boxes)
    cfg = from_dict(EvalConfig, {**FAST, "n": 6, "skip_pgd": True, "metrics": ["gt_known_loc", "top1_loc"]})
    res = evaluate(checkpoint, cfg, dataset=boxed, progress=False, out=checkpoint.parent / "loc.json", db=False)
    cols = res["per_example"]["metrics"]
    assert len(cols["gt_known_loc"]) == 6 and set(cols["gt_known_loc"]) <= {0.0, 1.0}
    assert all(t <= g for t, g in zip(cols["top1_loc"], cols["gt_known_loc"], strict=True))


def test_cli_metrics_option(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli.json"
    args = ["evaluate", str(checkpoint), "--n", "4", "--steps", "1", "--pgd-steps", "1", "--ig-steps", "2", "--k", "8",
            "--eps", "0.1", "--step-size", "0.05", "--metrics", "gini, ssim", "--out", str(out), "--no-db",
            "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    import json

    saved = json.loads(out.read_text())
    assert set(saved["per_example"]["metrics"]) == {"gini", "ssim"}
    bad = CliRunner().invoke(app, ["evaluate", str(checkpoint), "--metrics", "nope", "--no-db", "-q"])
    assert bad.exit_code != 0 and "unknown nope" in bad.output


def test_curve_metrics_are_recorded_in_the_database(checkpoint: Path, tmp_path: Path) -> None:
    """Per-example curves (ROAD, SSIM under noise) are lists per example; the database once refused them and the
    whole evaluation was left unrecorded with only a warning."""
    import warnings

    from attrobust.experiments.results.store import open_store

    db = tmp_path / "runs.db"
    cfg = from_dict(EvalConfig, {**FAST, "metrics": ["road", "ssim_noise"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # "the result was not recorded" fails the test
        res = evaluate(checkpoint, cfg, progress=False, out=tmp_path / "curves.json", db=db)
    assert res.get("db") is not None
    with open_store(db) as store:
        names = set(store.example_values(res["db"]["run_id"]))
    fractions = len(FAST["suite"]["road_fractions"])
    assert {f"metrics.road_curve[{j}]" for j in range(fractions)} <= names


def test_a_random_attribution_gives_the_same_numbers_for_the_same_protocol(checkpoint: Path) -> None:
    # SmoothGrad draws its noise from the evaluation's seeded streams (the suite's per batch, the attack's), never
    # from torch's global state: the same protocol gives the same numbers whatever ran before
    cfg = from_dict(EvalConfig, {**FAST, "n": 6, "ifia": {**FAST["ifia"], "attribution": "smoothgrad"},
                                 "metrics": ["gini", "ris"]})  # fmt: skip
    runs = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        res = evaluate(checkpoint, cfg, progress=False, out=checkpoint.parent / f"sg{global_seed}.json", db=False)
        runs.append((res["per_example"]["metrics"], res["per_example"]["ifia"]["kendall"]))
    assert runs[0] == runs[1]
    other = evaluate(checkpoint, cfg.__class__(**{**cfg.__dict__, "seed": 7}), progress=False,
                     out=checkpoint.parent / "sg7.json", db=False)  # fmt: skip
    assert other["per_example"]["metrics"]["gini"] != runs[0][0]["gini"]  # the seed does reach the noise


def test_road_records_the_probability_of_the_label_when_asked(checkpoint: Path, tmp_path: Path) -> None:
    # the smoothing paper's ROAD_AUC averages the drop of the predicted class's probability (section 4.1)
    from attrobust.experiments.report import write_report
    from attrobust.models.checkpoint import load

    cfg = from_dict(EvalConfig, {**FAST, "n": 6, "skip_pgd": True, "skip_ifia": True, "metrics": ["road"],
                                 "suite": {**FAST["suite"], "road_output": "probability"}})  # fmt: skip
    res = evaluate(checkpoint, cfg, progress=False, out=tmp_path / "p.json", db=False)
    assert "road" not in res and res["road_probability"]["fractions"] == [0.2, 0.5]
    # the oracle: the metric itself on the first batch's images and maps
    ds = data.load("synthetic", "test", n=96, size=8, num_classes=3)
    net = load(checkpoint)[0].eval()
    x, y = ds.images[:6], ds.labels[:6]
    maps = integrated_gradients(net, x, y, steps=3)
    gen = torch.Generator().manual_seed(suite.derive_seed(0, "road/0"))
    curve = metrics.faithfulness.road(net, x[:4], y[:4], maps[:4], fractions=[0.2, 0.5], output="probability",
                                      generator=gen)  # fmt: skip
    assert res["per_example"]["metrics"]["road"][:4] == pytest.approx(curve.auc.tolist(), abs=1e-6)
    accuracy = from_dict(EvalConfig, {**FAST, "n": 6, "skip_pgd": True, "skip_ifia": True, "metrics": ["road"]})
    acc = evaluate(checkpoint, accuracy, progress=False, out=tmp_path / "a.json", db=False)
    assert "road_probability" not in acc and set(acc["road"]) == {"fractions", "accuracy"}
    assert acc["protocol_fingerprint"] != res["protocol_fingerprint"]
    _, md = write_report({"p": res}, tmp_path / "report")
    assert "ROAD: probability of the label" in md.read_text()
    with pytest.raises(ValueError, match=r"suite\.road_output: expected .*'probability'"):
        from_dict(EvalConfig, {"suite": {"road_output": "logit"}})


def test_deletion_and_insertion_curves_are_stored_with_their_fractions_and_drawn(checkpoint: Path,
                                                                                 tmp_path: Path) -> None:
    # the curves used to be stored as bare means with no x axis, so the report could draw only their AUC
    from attrobust.experiments.report import write_report
    from attrobust.models.checkpoint import load

    cfg = from_dict(EvalConfig, {**FAST, "n": 4, "skip_pgd": True, "skip_ifia": True,
                                 "metrics": ["deletion", "insertion"]})  # fmt: skip
    res = evaluate(checkpoint, cfg, progress=False, out=tmp_path / "d.json", db=False)
    ds = data.load("synthetic", "test", n=96, size=8, num_classes=3)
    net = load(checkpoint)[0].eval()
    x, y = ds.images[:4], ds.labels[:4]
    maps = integrated_gradients(net, x, y, steps=3)
    for name in ("deletion", "insertion"):
        oracle = getattr(metrics.faithfulness, name)(net, x, y, maps)  # the metric with its own defaults
        stored = res[name]
        assert stored["fractions"] == pytest.approx(list(metrics.faithfulness.CURVE_FRACTIONS))
        curve = stored["probability"][cfg.ifia.attribution]
        assert curve == pytest.approx(oracle.curve.mean(0).tolist(), abs=1e-6)
        assert res["per_example"]["metrics"][name] == pytest.approx(oracle.auc.tolist(), abs=1e-6)
    _, md = write_report({"d": res}, tmp_path / "report")
    text = md.read_text()
    assert "Deletion: probability of the label" in text and "Insertion: probability of the label" in text


def test_the_bounds_of_the_l2_and_linf_tables_equal_the_bound_functions(checkpoint: Path, tmp_path: Path) -> None:
    # bounds paper appendix D.2: Table 7 reports T_e (Theorem 1), T'_e (eq. 39) and T_c (Corollary 2) of the l2
    # ball, Table 8 T_e (Theorem 2) and T_c of the l_inf ball
    from attrobust.metrics import bounds
    from attrobust.models.checkpoint import load

    names = ["l2_bound", "modified_bound", "cosine_bound", "linf_bound", "linf_cosine_bound"]
    cfg = from_dict(EvalConfig, {**FAST, "n": 4, "skip_pgd": True, "skip_ifia": True, "metrics": names})
    res = evaluate(checkpoint, cfg, progress=False, out=tmp_path / "b.json", db=False)
    got = {name: torch.tensor(res["per_example"]["metrics"][name], dtype=torch.float64) for name in names}
    assert res["summary"]["metrics"]["l2_bound"]["count"] == 4
    # the oracle: the functions of attrobust.metrics.bounds on the same images (power iteration from another
    # start: xi_max agrees to its tolerance)
    net = load(checkpoint)[0].eval()
    ds = data.load("synthetic", "test", n=96, size=8, num_classes=3)
    x, y = ds.images[:4], ds.labels[:4]
    kw = {"attribution": "saliency", "beta": 5.0, "ig_steps": 3}
    gen = torch.Generator().manual_seed(123)
    t_e = bounds.euclidean_bound(net, x, y, 0.1, norm="l2", generator=gen, **kw).double()
    torch.testing.assert_close(got["l2_bound"], t_e, rtol=1e-3, atol=1e-7)
    linf = bounds.linf_bound(net, x, y, 0.1, **kw).double()
    torch.testing.assert_close(got["linf_bound"], linf, rtol=1e-5, atol=1e-7)
    linf_c = bounds.cosine_bound(net, x, y, 0.1, bound="linf", **kw).double()
    torch.testing.assert_close(got["linf_cosine_bound"], linf_c, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(got["linf_cosine_bound"], got["cosine_bound"])  # a different T_e underneath
    modified = bounds.modified_euclidean_bound(net, x, y, 0.1, generator=gen, **kw).bound.double()
    torch.testing.assert_close(got["modified_bound"], modified, rtol=1e-3, atol=1e-7)
    cosine = bounds.cosine_bound(net, x, y, 0.1, generator=gen, **kw).double()
    torch.testing.assert_close(got["cosine_bound"], cosine, rtol=1e-3, atol=1e-7)
    # the l2 columns share their xi_max (the same seeded start): T'_e = max(T_e, the deviation along v_max) is
    # never below T_e, not even by the power iteration's tolerance
    assert bool((got["modified_bound"] >= got["l2_bound"]).all())


def test_every_bound_reads_the_eps_of_the_protocol() -> None:
    from attrobust.experiments.protocol import EPS_METRICS

    assert set(suite.BOUND_METRICS) == set(EPS_METRICS) and set(suite.BOUND_METRICS) <= set(suite.SUITE_METRICS)
