"""The report's results section: the table of every suite metric, bootstrap intervals for every mean (checked
against an independent resampling), tables as CSV and LaTeX, figures as PDF, legends outside the panels, class
names in the saliency grids, one protocol line per protocol, results of the wrong shape (left out with a note,
never an exception), ``report --out`` at a file, and ``attrobust leaderboard`` with several metrics and CSV."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from typer.testing import CliRunner

from attrobust.cli import app
from attrobust.experiments import examples as examples_lib
from attrobust.experiments.report import (
    METHOD,
    SaliencyExamples,
    curve_plots,
    latex_text,
    saliency_grid,
    tradeoff_plot,
    write_report,
)
from attrobust.experiments.results.store import open_store
from test_report import Page, check_self_contained, fake_result, row_of
from test_store import fake_results

GINI = [0.91, 0.85, 0.97, 0.88, 0.93]
ROAD_AUC = [0.4, None, 0.6, 0.5, 0.3]  # None: an example the metric does not apply to


def _stats(values: list[float | None]) -> dict[str, Any]:
    """What evaluate stores for a suite metric: count and spread of the finite values (numpy, not the package)."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    q25, median, q75 = np.quantile(v, [0.25, 0.5, 0.75])
    return {"count": len(v), "mean": float(v.mean()), "std": float(v.std()), "median": float(median),
            "q25": float(q25), "q75": float(q75)}  # fmt: skip


def _with_metrics(natural: float = 0.8, **extra: Any) -> dict[str, Any]:
    """A result with per-example accuracy columns and two suite metrics (and a gamma summary)."""
    res = fake_result(natural, 0.4, [0.5, 0.7, 0.9, 0.6, 0.8], [0.3, 0.2, 0.6, 0.4, 0.5], [True] * 4 + [False],
                      **extra)  # fmt: skip
    res["per_example"].update(natural_correct=[True] * 4 + [False], pgd_correct=[True, True, False, False, False])
    res["summary"].update(natural_acc=0.8, pgd_acc=0.4)
    res["summary"]["metrics"] = {"gini": _stats(GINI), "road": _stats(ROAD_AUC), "gamma_kendall_cosine": 0.25}
    res["per_example"]["metrics"] = {"gini": GINI, "road": ROAD_AUC}
    return res


def _oracle(values: list[float], b: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap of the mean, written out here: b resamples of all indices at once."""
    v = np.asarray(values, dtype=np.float64)
    means = v[np.random.default_rng(seed).integers(0, len(v), size=(b, len(v)))].mean(axis=1)
    low, high = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(low), float(high)


# --------------------------------------------------------------------------------------------------------------
# tables: suite metrics, intervals, exports


def test_every_suite_metric_has_a_row_with_mean_median_quartiles_and_interval(tmp_path: Path) -> None:
    html_path, md_path = write_report({"m": _with_metrics()}, tmp_path)
    page = check_self_contained(html_path.read_text())
    metrics = next(t for t in page.tables if t[0][:2] == ["model", "metric"])
    gini, road = _stats(GINI), _stats(ROAD_AUC)
    assert row_of(metrics[2:], "m") == ["m", "gini", "5", f"{gini['mean']:.4f}", "[{:.4f}, {:.4f}]".format(
        *_oracle(GINI)), *(f"{gini[k]:.4f}" for k in ("std", "median", "q25", "q75"))]  # fmt: skip
    road_row = next(r for r in metrics if r[:2] == ["m", "road"])
    finite = [x for x in ROAD_AUC if x is not None]
    assert road_row[2:5] == ["4", f"{road['mean']:.4f}", "[{:.4f}, {:.4f}]".format(*_oracle(finite))]
    assert next(r for r in metrics if r[:2] == ["m", "gamma_kendall_cosine"])[3] == "0.2500"
    assert "Suite metrics" in md_path.read_text() and "| m | gini | 5 |" in md_path.read_text()


def test_every_mean_of_the_papers_table_has_its_bootstrap_interval(tmp_path: Path) -> None:
    res = _with_metrics()
    html_path, _ = write_report({"m": res}, tmp_path)
    row = row_of(Page(html_path.read_text()).tables[0], "m")
    topk = [0.5, 0.7, 0.9, 0.6, 1.0]  # the invalid sample counts as 1.0, as in the table's mean
    kendall = [0.3, 0.2, 0.6, 0.4, 1.0]
    assert row[2] == "[{:.2f}%, {:.2f}%]".format(*(100 * x for x in _oracle([1.0] * 4 + [0.0])))
    assert row[4] == "[{:.2f}%, {:.2f}%]".format(*(100 * x for x in _oracle([1.0, 1.0, 0.0, 0.0, 0.0])))
    assert row[6] == "[{:.4f}, {:.4f}]".format(*_oracle(topk))
    assert row[8] == "[{:.4f}, {:.4f}]".format(*_oracle(kendall))
    stats = row_of(Page(html_path.read_text()).tables[2], "m")
    assert stats[5] == row[6] and stats[8] == "[{:.4f}, {:.4f}]".format(*_oracle(topk[:4])), "valid-only mean"
    assert METHOD in " ".join(Page(html_path.read_text()).text) and "B = 2000" in METHOD and "seeded" in METHOD
    # a per-example column that does not reproduce the stored mean gives no interval
    res["summary"]["natural_acc"] = 0.6
    row = row_of(Page(write_report({"m": res}, tmp_path / "2")[0].read_text()).tables[0], "m")
    assert row[1:3] == ["60.00%", "-"]


def test_every_table_is_written_as_csv_and_latex(tmp_path: Path) -> None:
    html_path, _ = write_report({"m": _with_metrics(), "m & co_1": _with_metrics()}, tmp_path)
    tables = Page(html_path.read_text()).tables
    for stem, html_table in (("report_results", tables[0]), ("report_metrics", tables[1]),
                             ("report_ifia_stats", tables[2])):  # fmt: skip
        rows = list(csv.reader(io.StringIO((tmp_path / f"{stem}.csv").read_text())))
        body = [r for r in html_table if r and r[0] in ("m", "m & co_1")]
        assert rows[1:] == body, stem
        tex = (tmp_path / f"{stem}.tex").read_text()
        assert all(word in tex for word in ("\\toprule", "\\midrule", "\\bottomrule", "\\usepackage{booktabs}"))
        assert len(re.findall(r"\\\\$", tex, flags=re.MULTILINE)) == len(rows), "header and one line per row"
    tex = (tmp_path / "report_results.tex").read_text()
    assert "m \\& co\\_1 & 80.00\\% & {[}" in tex and "Protocol" not in tex and "\\caption{Results. protocol" in tex
    assert latex_text((["a", "b"], [["x", "1 ± 2 $ # ~"]])).count("$\\pm$") == 1


def test_every_figure_is_written_as_pdf_beside_its_png(tmp_path: Path) -> None:
    res = _with_metrics(ssim_noise={"sigma": [0.0, 0.1], "ssim": {"ig": [1.0, 0.8]}})
    _, md_path = write_report({"m": res}, tmp_path)
    pngs = sorted(p.stem for p in tmp_path.glob("report_*.png"))
    assert pngs == ["report_boxplots", "report_ssim_noise", "report_tradeoff"]
    assert sorted(p.stem for p in tmp_path.glob("report_*.pdf")) == pngs
    for stem in pngs:
        assert (tmp_path / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert f"[PDF]({stem}.pdf)" in md_path.read_text()


# --------------------------------------------------------------------------------------------------------------
# figures: legends, class names


def _overlaps(fig: Figure) -> list[str]:
    """The axes each legend of ``fig`` covers (after drawing)."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends, "the figure has a legend"
    return [ax.get_title() or str(i) for leg in legends for i, ax in enumerate(fig.axes)
            if leg.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer))]  # fmt: skip


def test_legends_cover_no_panel() -> None:
    names = [f"model {i}" for i in range(6)]
    fig = tradeoff_plot(names, [0.99] * 6, [0.95] * 6, {"top-k": [0.9, 0.92, 0.95, 0.97, 0.99, 1.0]})
    assert _overlaps(fig) == []
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == [*names, "natural accuracy", "PGD accuracy"], "one entry per model and per marker"
    x = [0.0, 0.5, 1.0]
    fig = curve_plots({"ig": {n: (x, [1.0, 0.9, 0.8]) for n in names}, "saliency": {"a": (x, x)}}, xlabel="x")
    assert _overlaps(fig) == []
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [*names, "a"], "one entry per model"


def _examples(classes: list[str] | None) -> SaliencyExamples:
    n = 2
    img, m = np.full((n, 1, 4, 4), 0.5, dtype=np.float32), np.ones((n, 4, 4), dtype=np.float32)
    return SaliencyExamples(images=img, maps=m, adv_images=img, adv_maps=m, topk=np.ones(n), kendall=np.ones(n),
                            valid=np.ones(n, dtype=bool), indices=np.array([12, 40]), labels=np.array([3, 9]), k=4,
                            attribution="ig", classes=None if classes is None else np.array(classes))  # fmt: skip


def test_saliency_grid_rows_are_labelled_with_class_names() -> None:
    fig = saliency_grid(_examples(["cat", "truck"]))
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["#12: cat (label 3)", "#40: truck (label 9)"]
    fig = saliency_grid(_examples(["3", "9"]))  # digits: the name is the label
    assert [ax.get_ylabel() for ax in fig.axes[::4]] == ["#12: 3", "#40: 9"]
    assert saliency_grid(_examples(None)).axes[0].get_ylabel() == "#12: label 3"


def test_class_names_are_looked_up_when_the_examples_file_has_none(tmp_path: Path) -> None:
    ex = _examples(None)
    arrays = {"images": ex.images, "adv_images": ex.adv_images, "maps": ex.maps, "adv_maps": ex.adv_maps,
              "topk": ex.topk, "kendall": ex.kendall, "valid": ex.valid, "index": ex.indices, "label": ex.labels,
              "attribution": np.array("ig"), "k": np.array(4)}  # fmt: skip
    np.savez(tmp_path / "r.examples.npz", **arrays)
    results = {"examples": {"file": "r.examples.npz"}, "path": str(tmp_path / "r.json"),
               "dataset": {"name": "cifar10"}}  # fmt: skip
    loaded = examples_lib.load(results)
    assert loaded is not None and loaded.classes.tolist() == ["cat", "truck"]
    unknown = examples_lib.load({**results, "dataset": {"name": "my_folder"}})
    assert unknown is not None and unknown.classes is None, "no names invented for a dataset without fixed ones"


# --------------------------------------------------------------------------------------------------------------
# protocols


def test_the_protocol_line_is_written_once_per_protocol(tmp_path: Path) -> None:
    one = _with_metrics(eval_config={"n": 10, "ifia": {"k": 4}})
    other = _with_metrics(eval_config={"n": 10, "ifia": {"k": 8}})
    html_path, md_path = write_report({"a": one, "b": one, "c": other}, tmp_path)
    html_text = html_path.read_text()
    assert html_text.count('<p class="protocol">') == 2 and md_path.read_text().count("**Protocol**") == 2
    assert (tmp_path / "report_results_2.csv").is_file() and (tmp_path / "report_metrics_2.tex").is_file()
    for stem in ("report_results", "report_metrics", "report_ifia_stats"):
        first = list(csv.reader(io.StringIO((tmp_path / f"{stem}.csv").read_text())))
        assert sorted({r[0] for r in first[1:]}) == ["a", "b"], f"{stem}: the models of one protocol, no other"
        second = list(csv.reader(io.StringIO((tmp_path / f"{stem}_2.csv").read_text())))
        assert {r[0] for r in second[1:]} == {"c"}, stem


# --------------------------------------------------------------------------------------------------------------
# results of the wrong shape: the bad part is left out with a note


@pytest.mark.parametrize(
    ("where", "value", "note"),
    [
        ("ifia", [0.5, 0.6], "summary.ifia: expected a mapping of IFIA statistics, got a list"),
        ("natural_acc", [0.5], "summary.natural_acc: expected a finite number or null, got a list"),
        ("natural_acc", "high", "summary.natural_acc: expected a finite number or null, got a str ('high')"),
        ("metrics", {"gini": 0.9}, "summary.metrics.gini: expected a mapping of statistics"),
        ("metrics", [1], "summary.metrics: expected a mapping metric -> statistics, got a list"),
        ("no_valid", "one", "summary.no_valid: expected a count, got a str"),
    ],
)
def test_results_of_the_wrong_shape_lose_only_the_bad_part(tmp_path: Path, where: str, value: Any, note: str) -> None:
    bad = _with_metrics()
    bad["summary"][where] = value
    lines: list[str] = []
    html_path, _ = write_report({"bad": bad, "good": _with_metrics()}, tmp_path, echo=lines.append)
    assert any(f"bad: {note}" in line and line.endswith("left out") for line in lines), lines
    page = check_self_contained(html_path.read_text())
    assert note in " ".join(page.text)
    good = row_of(page.tables[0], "good")
    assert good[1] == "80.00%" and row_of(page.tables[0], "bad")[0] == "bad"
    assert bad["summary"][where] == value, "the caller's results are not changed"


def test_a_flat_start_count_of_the_wrong_shape_is_left_out(tmp_path: Path) -> None:
    bad = _with_metrics()
    bad["summary"]["ifia"]["flat_start"] = 1.5
    lines: list[str] = []
    html_path, _ = write_report({"bad": bad}, tmp_path, echo=lines.append)
    assert any("bad: summary.ifia.flat_start: expected a count, got a float" in line for line in lines), lines
    (stats,) = [t for t in Page(html_path.read_text()).tables if t[0][:2] == ["model", "attacked"]]
    assert row_of(stats, "bad")[1:4] == ["5", "1", "-"]


def test_per_example_columns_of_the_wrong_shape_are_left_out(tmp_path: Path) -> None:
    bad = _with_metrics()
    bad["per_example"] = [1, 2, 3]
    lines: list[str] = []
    html_path, _ = write_report({"bad": bad}, tmp_path, echo=lines.append)
    assert "left out: bad: per_example: expected a mapping of columns, got a list; left out" in lines
    row = row_of(Page(html_path.read_text()).tables[0], "bad")
    assert row[1:3] == ["80.00%", "-"], "the figure stays, its interval needs the per-example values"


def test_cli_report_on_wrong_shapes_and_out_at_a_file(tmp_path: Path) -> None:
    import json

    res = _with_metrics()
    res["summary"].update(ifia=[1, 2], natural_acc="0.9", metrics={"gini": 0.5})
    path = tmp_path / "results.json"
    path.write_text(json.dumps(res))
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0 and "Traceback" not in result.output, result.output
    assert "left out: " in result.output and "summary.metrics.gini" in result.output
    taken = tmp_path / "taken.html"
    taken.write_text("mine")
    result = runner.invoke(app, ["report", str(path), "--out", str(taken)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"error: --out: expected a directory for the report (existing or to create), got the existing file {taken}" \
        in result.output.replace("\n", "")  # fmt: skip
    assert taken.read_text() == "mine"
    with pytest.raises(ValueError, match="out_dir: expected a directory"):
        write_report([path], taken)


# --------------------------------------------------------------------------------------------------------------
# leaderboard


def test_leaderboard_shows_several_metrics_and_writes_csv(tmp_path: Path) -> None:
    db = tmp_path / "board.db"
    with open_store(db) as store:
        for name, topk, kendall in (("a", 0.2, 0.15), ("b", 0.6, None), ("c", 0.4, 0.35)):
            res = fake_results(name, topk=topk)
            res["summary"]["kendall"] = kendall
            store.record_evaluation(res)
    runner = CliRunner()
    out = tmp_path / "board.csv"
    args = ["leaderboard", "--dataset", "mnist", "--metric", "topk,kendall,natural_acc", "--db", str(db)]
    result = runner.invoke(app, [*args, "--csv", str(out)])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if line.startswith("rank"))
    assert [c.strip() for c in header.split("|")][:4] == ["rank", "topk", "kendall", "natural_acc"]
    rows = list(csv.reader(io.StringIO(out.read_text())))
    assert rows[0][:5] == ["rank", "topk", "kendall", "natural_acc", "name"]
    natural = fake_results("a")["summary"]["natural_acc"]
    assert [r[:5] for r in rows[1:]] == [["1", "0.6", "", repr(natural), "b"], ["2", "0.4", "0.35", repr(natural), "c"],
                                         ["3", "0.2", "0.15", repr(natural), "a"]]  # fmt: skip
    bad = runner.invoke(app, [*args[:-2], "--metric", "topk,nope", "--db", str(db)])
    assert bad.exit_code == 2 and "metric: expected one of" in bad.output and "got 'nope'" in bad.output
    folder = runner.invoke(app, [*args, "--csv", str(tmp_path)])
    assert folder.exit_code == 2 and "--csv: expected a file to write" in folder.output
