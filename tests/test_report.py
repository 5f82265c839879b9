"""Reports: self-contained HTML (embedded PNGs, escaped text), Markdown, tables, figures, saliency grids (from
the stored examples), CLI and a headless-Chromium check that every image decodes with no console error and no
network request. The report written from stored results alone, and the examples themselves: test_report_stored.py,
test_examples.py."""

from __future__ import annotations

import base64
import binascii
import fcntl
import io
import json
import os
import re
import select
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from attrobust.experiments.cli import app
from attrobust.experiments.config import EvalConfig, TrainConfig, from_dict
from attrobust.experiments.evaluate import evaluate, summarize, table_row
from attrobust.experiments.report import (
    CURVES,
    box_plots,
    curve_plots,
    load_results,
    results_table,
    tradeoff_plot,
    write_report,
)
from attrobust.experiments.train import train

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = {
    "n": 12,
    "batch_size": 12,
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
    "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
}
DATA_KWARGS = {"n": 96, "size": 8, "num_classes": 3, "noise": 0.6}


# --------------------------------------------------------------------------------------------------------------
# fixtures and helpers


def train_tiny(out: Path) -> Path:
    """The checkpoint of a small_cnn trained a few steps on 8x8 synthetic data (3 classes), run ``out/tiny``."""
    cfg = from_dict(
        TrainConfig,
        {"name": "tiny", "data": {"name": "synthetic", "kwargs": DATA_KWARGS}, "model": {"name": "small_cnn"},
         "optim": {"lr": 1e-2}, "steps": 6, "batch_size": 16, "out_dir": str(out)},
    )  # fmt: skip
    return train(cfg, progress=False).model_path


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, Any]]:
    """(checkpoint, results.json, results) of a small_cnn trained a few steps on 8x8 synthetic data."""
    ckpt = train_tiny(tmp_path_factory.mktemp("runs"))
    path = ckpt.parent / "results.json"
    results = evaluate(ckpt, from_dict(EvalConfig, FAST), progress=False, out=path)
    assert 0 < results["summary"]["natural_acc"] < 1 and results["summary"]["ifia"]["attacked"] >= 3
    return ckpt, path, results


@pytest.fixture(scope="module")
def full_report(evaluated: tuple[Path, Path, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, path, _ = evaluated
    html_path, _ = write_report([path], tmp_path_factory.mktemp("report"), n_examples=2)
    return html_path


def fake_result(
    natural: float | None, pgd: float | None, topk: list[float], kendall: list[float], valid: list[bool], **extra: Any
) -> dict[str, Any]:
    """A result dict shaped like evaluate()'s (summary statistics from evaluate.summarize)."""
    v = torch.tensor(valid, dtype=torch.bool)
    stats = {
        "attacked": len(topk),
        "no_valid": int((~v).sum()),
        "topk": summarize(torch.tensor(topk, dtype=torch.float64), v),
        "kendall": summarize(torch.tensor(kendall, dtype=torch.float64), v),
    }
    summary = {"n": 10, "natural_acc": natural, "pgd_acc": pgd, "topk": stats["topk"]["mean"],
               "kendall": stats["kendall"]["mean"], "no_valid": stats["no_valid"], "ifia": stats}  # fmt: skip
    ifia = {"index": list(range(len(topk))), "topk": topk, "kendall": kendall, "valid": valid, "step": [1] * len(topk)}
    return {"summary": summary, "per_example": {"ifia": ifia}, "eval_config": {"n": 10}, **extra}


class Page(HTMLParser):
    """Collects the tags, attributes, table cells and text of an HTML page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.imgs: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.text: list[str] = []
        self._cell: list[str] | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "img":
            self.imgs.append(dict(attrs).get("src") or "")
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, d: str) -> None:
        self.text.append(d)
        if self._cell is not None:
            self._cell.append(d)


def decode_png(raw: bytes) -> np.ndarray:
    assert raw[:8] == PNG_SIGNATURE
    img = matplotlib.image.imread(io.BytesIO(raw), format="png")
    assert img.ndim == 3 and img.shape[0] > 10 and img.shape[1] > 10
    return img


def check_self_contained(html_text: str) -> Page:
    """No external reference, no script, every <img> a decodable data:image/png;base64 URI."""
    page = Page(html_text)
    assert "script" not in page.tags
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?\s*(?:https?:)?//", html_text, flags=re.IGNORECASE)
    assert not re.search(r"url\(", html_text), "no CSS url() references"
    for tag, name, value in page.attrs:
        if name in ("src", "href", "action", "srcset"):
            assert value.startswith("data:image/png;base64,") or value.startswith("#"), (tag, name, value[:60])
    for src in page.imgs:
        assert src.startswith("data:image/png;base64,")
        decode_png(base64.b64decode(src.split(",", 1)[1], validate=True))
    return page


def row_of(table: list[list[str]], name: str) -> list[str]:
    return next(r for r in table if r and r[0] == name)


# --------------------------------------------------------------------------------------------------------------
# the report of a real evaluation


def test_report_of_an_evaluation_is_self_contained(
    evaluated: tuple[Path, Path, dict[str, Any]], full_report: Path
) -> None:
    _, path, results = evaluated
    html_text = full_report.read_text(encoding="utf-8")
    page = check_self_contained(html_text)
    assert len(page.imgs) == 3, "box plots, trade-off and one saliency grid"
    assert plt.get_fignums() == [], "no figure is left open"
    expected = table_row("tiny", results)
    row = row_of(page.tables[0], "tiny")
    assert page.tables[0][0] == ["model", "natural acc", "PGD acc", "top-k", "Kendall", "no-valid"]
    assert page.tables[0][1] == ["value", "95% CI"] * 4, "each figure over its value and its interval"
    values = [row[0], *row[1:9:2], row[9]]
    assert values == [expected[c] for c in ("model", "natural acc", "PGD acc", "top-k", "Kendall", "no-valid")]
    assert all(re.fullmatch(r"\[\S+, \S+\]", cell) for cell in row[2:9:2]), row
    stats = row_of(page.tables[1], "tiny")
    s = results["summary"]["ifia"]
    assert stats[1:4] == [str(s["attacked"]), str(s["no_valid"]), str(s["flat_start"])]
    assert stats[4] == f"{s['topk']['mean']:.4f} ± {s['topk']['std']:.4f}"
    assert (full_report.parent / "report_ifia_stats.csv").is_file()
    assert (full_report.parent / "report_tradeoff.pdf").read_bytes()[:5] == b"%PDF-"
    # configuration and provenance in a collapsible block
    details = html_text[html_text.index("<details>") : html_text.index("</details>")]
    meta = json.loads(Page(details[details.index("<pre>") :]).text[0])
    assert meta["runs"]["tiny"]["eval_config"] == results["eval_config"]
    assert meta["runs"]["tiny"]["checkpoint_sha256"] == results["checkpoint_sha256"]
    assert meta["runs"]["tiny"]["path"] == str(path)
    assert meta["report"]["torch"] == torch.__version__
    # the Markdown summary: same cells, links to the PNGs written beside it
    md = (full_report.parent / "report.md").read_text(encoding="utf-8")
    assert "| " + " | ".join(row).replace("[", "\\[").replace("]", "\\]") + " |" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 3
    for link in links:
        assert "/" not in link and link.endswith(".png")
        decode_png((full_report.parent / link).read_bytes())


# --------------------------------------------------------------------------------------------------------------
# tables


def test_published_numbers_give_paper_and_difference_columns(tmp_path: Path) -> None:
    ours = fake_result(0.9912, None, [0.6, 0.62468], [0.5, 0.5], [True, True])
    published = {"natural": {"natural_acc": 0.98, "pgd_acc": 0.4, "topk": 0.7}, "paper only": {"kendall": 0.25}}
    html_path, md_path = write_report({"natural": ours}, tmp_path, published=published)
    table = Page(html_path.read_text()).tables[0]
    assert table[0][:2] == ["model", "natural acc"] and table[1][:4] == ["ours", "95% CI", "paper", "difference"]
    row = row_of(table, "natural")
    # natural acc, PGD acc, top-k, Kendall: ours | interval | paper | ours - paper; then no-valid (no per-example
    # accuracy columns stored here: no interval for the accuracies)
    assert row == ["natural", "99.12%", "-", "98.00%", "+1.12 pp", "-", "-", "40.00%", "-", "0.6123",
                   "[0.6000, 0.6247]", "0.7000", "-0.0877", "0.5000", "[0.5000, 0.5000]", "-", "-", "0/2"]  # fmt: skip
    assert row_of(table, "paper only") == ["paper only", *["-"] * 14, "0.2500", "-", "-"]
    header, rows = results_table({"natural": ours}, published)
    assert header[1:5] == ["natural acc", "natural acc 95% CI", "natural acc (paper)", "natural acc (diff)"]
    assert len(header) == 18
    md = md_path.read_text()
    assert "| " + " | ".join(rows[0]).replace("[", "\\[").replace("]", "\\]") + " |" in md
    assert "natural acc (paper)" in md
    with pytest.raises(ValueError, match="unknown metric 'top1'"):
        results_table({"natural": ours}, {"natural": {"top1": 0.5}})
    with pytest.raises(ValueError, match="expected a finite number"):
        results_table({"natural": ours}, {"natural": {"topk": "high"}})


def test_text_is_escaped(tmp_path: Path) -> None:
    evil = "<b>x</b> & $y$ | [z]"
    res = fake_result(0.5, 0.25, [0.5, 0.7], [0.1, 0.3], [True, False], road={"fractions": [0, 0.5], "accuracy":
                      {"<i>ig</i>": [0.9, 0.4]}})  # fmt: skip
    html_path, md_path = write_report({evil: res}, tmp_path, title="<script>alert(1)</script>")
    html_text = html_path.read_text()
    check_self_contained(html_text)
    assert "<b>x</b>" not in html_text and "<i>ig</i>" not in html_text and "<script>" not in html_text
    assert "&lt;b&gt;x&lt;/b&gt; &amp; $y$ | [z]" in html_text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html_text
    assert row_of(Page(html_text).tables[0], evil)[0] == evil, "the escaped name reads back as the name"
    md = md_path.read_text()
    prose, _, rest = md.partition("```json\n")
    block, _, tail = rest.partition("\n```\n")
    assert evil in json.loads(block)["runs"], "inside the code block the name is kept verbatim (not rendered)"
    assert "<b>x</b>" not in prose + tail and "<script>" not in prose + tail
    assert "&lt;b&gt;x&lt;/b&gt; &amp; $y$ \\| \\[z\\]" in prose


# --------------------------------------------------------------------------------------------------------------
# sections present only when the results have their data


def test_missing_and_malformed_sections_are_left_out(tmp_path: Path) -> None:
    bare = {"summary": {"n": 5, "natural_acc": 0.8}}
    html_path, md_path = write_report([bare], tmp_path / "bare")
    page = check_self_contained(html_path.read_text())
    assert page.imgs == [] and "Figures" not in page.text and "IFIA statistics" not in page.text
    assert row_of(page.tables[0], "model 1") == ["model 1", "80.00%", *["-"] * 8]
    notes = " ".join(page.text)
    assert "box plots left out" in notes and "trade-off plot left out" in notes
    assert "no stored examples for model 1: saliency-map grid left out" in notes
    assert "![" not in md_path.read_text()

    broken = fake_result(0.9, 0.1, [0.5, 0.6], [0.2, 0.3], [True, True], road={"fractions": [0, 0.5, 1],
                         "accuracy": {"ig": [0.9, 0.5]}}, eps_sweep="not a mapping")  # fmt: skip
    broken["per_example"]["ifia"]["kendall"] = [0.2]
    ssim = {"sigma": [0.0, 0.1, 0.2], "ssim": {"ig": [1.0, 0.8, 0.6], "saliency": [1, 0.7, 0.5]}}
    good = fake_result(0.8, 0.5, [0.7, 0.8], [0.4, 0.6], [True, False], ssim_noise=ssim,
                       eps_sweep={"eps": [0.05, 0.1], "topk": [0.9, 0.8]})  # fmt: skip
    html_path, md_path = write_report({"broken": broken, "good": good}, tmp_path / "mixed")
    page = check_self_contained(html_path.read_text())
    titles = {c.key: c.title for c in CURVES}
    text = " ".join(page.text)
    drawn = {key for key, title in titles.items() if title in text}
    assert drawn == {"eps_sweep", "ssim_noise"}, "eps sweep and SSIM; no ROAD"
    assert "Accuracy vs. attributional robustness" in text and "Per-example" in text
    assert len(page.imgs) == 4
    assert "per-example IFIA values of broken are malformed" in text
    assert "road of broken: ig is not a numeric list" in text and "eps_sweep of broken: expected a mapping" in text
    for name in ("report_boxplots.png", "report_tradeoff.png", "report_eps_sweep.png", "report_ssim_noise.png"):
        decode_png((md_path.parent / name).read_bytes())
    assert plt.get_fignums() == []


def test_figure_functions_draw_the_given_arrays() -> None:
    x, y1, y2 = [0.0, 0.1, 0.2], [1.0, 0.7, 0.4], [1.0, 0.9, 0.8]
    fig = curve_plots({"ig": {"a": (x, y1), "b": (x, y2)}, "saliency": {"a": (x, y2)}}, xlabel="sigma", ylabel="SSIM")
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[0].lines[0].get_xydata(), np.c_[x, y1])
    np.testing.assert_allclose(fig.axes[0].lines[1].get_xydata(), np.c_[x, y2])
    assert fig.axes[0].lines[0].get_color() == fig.axes[1].lines[0].get_color(), "one colour per model"
    assert fig.axes[1].get_ylabel() == "SSIM" and fig.axes[1].get_title() == "saliency"
    fig = curve_plots({"p": {"a": (x, y1)}}, xlabel="x", colour_order=["b", "a"])
    assert fig.axes[0].lines[0].get_color() == matplotlib.colormaps["tab10"](1), "colour = position in the order"

    values = {"a": [0.1, 0.5, 0.9, 0.4], "b": [0.2, 0.3, 0.25]}
    fig = box_plots({"top-k": values, "Kendall": {"a": [0.0, -0.5, 0.5]}})
    medians = [line.get_ydata()[0] for line in fig.axes[0].lines if line.get_gid() == "median"]
    assert medians == pytest.approx([np.median(values["a"]), np.median(values["b"])])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["a", "b"]
    assert fig.axes[1].get_ylim()[0] < -0.5, "negative Kendall values stay visible"

    fig = tradeoff_plot(["a", "b"], [0.9, 0.8], [0.1, None], {"top-k": [0.3, 0.6]})
    points = np.concatenate([c.get_offsets() for c in fig.axes[0].collections])
    np.testing.assert_allclose(points, [[0.3, 0.9], [0.3, 0.1], [0.6, 0.8]])


def test_bad_input_raises(evaluated: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _, path, results = evaluated
    with pytest.raises(FileNotFoundError, match="results file not found"):
        write_report([tmp_path / "none.json"], tmp_path)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="expected a JSON results file"):
        write_report([tmp_path / "bad.json"], tmp_path)
    with pytest.raises(ValueError, match="'summary' mapping"):
        write_report([{"natural_acc": 0.5}], tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        write_report([], tmp_path)
    with pytest.raises(ValueError, match="n_examples"):
        write_report([path], tmp_path, n_examples=0)
    assert not (tmp_path / "report.html").exists(), "nothing is written before the input is checked"
    named = load_results([path, ("renamed", results), results])
    assert list(named) == ["tiny", "renamed", "tiny (2)"]
    assert list(load_results(results)) == ["tiny"], "a single result dict is one result"


def test_grid_is_drawn_from_the_stored_examples(evaluated: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _, path, results = evaluated
    lines: list[str] = []
    html_path, _ = write_report({"tiny": path}, tmp_path, n_examples=2, echo=lines.append)
    assert lines == [], "nothing left out"
    grid = decode_png((tmp_path / "report_saliency_0_tiny.png").read_bytes())
    many = decode_png(write_report({"tiny": path}, tmp_path / "all")[0].parent.joinpath("report_saliency_0_tiny.png")
                      .read_bytes())  # fmt: skip
    assert results["examples"]["count"] == 4 and many.shape[0] > grid.shape[0], "n_examples caps the rows"
    no_examples = {k: v for k, v in results.items() if k != "examples"}
    html_path, _ = write_report({"tiny": no_examples}, tmp_path / "none", echo=lines.append)
    assert lines == ["left out: no stored examples for tiny: saliency-map grid left out"]
    assert len(Page(html_path.read_text()).imgs) == 2


# --------------------------------------------------------------------------------------------------------------
# command line


def test_cli_report(evaluated: tuple[Path, Path, dict[str, Any]], tmp_path: Path) -> None:
    _, path, results = evaluated
    published = tmp_path / "paper.yaml"
    published.write_text(yaml.safe_dump({"natural": {"natural_acc": 0.5}}))
    runner = CliRunner()
    out = tmp_path / "out"
    args = ["report", f"natural={path}", "--out", str(out), "--n-examples", "1"]
    result = runner.invoke(app, [*args, "--published", str(published), "--title", "Quick"])
    assert result.exit_code == 0, result.output
    assert f"html: {out / 'report.html'}" in result.output and f"markdown: {out / 'report.md'}" in result.output
    page = check_self_contained((out / "report.html").read_text())
    row = row_of(page.tables[0], "natural")
    assert row[1] == table_row("n", results)["natural acc"] and row[3] == "50.00%" and row[4].endswith(" pp")
    assert len(page.imgs) == 3
    old = runner.invoke(app, ["report", str(path), "--out", str(tmp_path / "old"), "--models", "tiny=gone.pt", "-q"])
    assert old.exit_code == 0 and "--models is deprecated and ignored" in old.output, old.output
    assert len(check_self_contained((tmp_path / "old" / "report.html").read_text()).imgs) == 3, "grid still there"
    for bad in (
        ["report", str(tmp_path / "none.json"), "--out", str(out)],
        ["report", str(path), "--out", str(out), "--published", str(tmp_path / "none.yaml")],
    ):
        result = runner.invoke(app, bad)
        assert result.exit_code == 2 and "error:" in result.output and "Traceback" not in result.output, bad


# --------------------------------------------------------------------------------------------------------------
# a real browser: Chromium over the DevTools protocol on a pipe (no extra package needed)

CHROMIUM = "/usr/bin/chromium"


class Chromium:
    """Headless Chromium driven through ``--remote-debugging-pipe`` (NUL-separated JSON on fds 3 and 4)."""

    def __init__(self, user_data_dir: Path, log: Path) -> None:
        cmd_r, self._cmd_w = os.pipe()
        self._res_r, res_w = os.pipe()

        def child_fds() -> None:  # runs in the child before exec: the pipe ends become fds 3 and 4
            a, b = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--disable-extensions", f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe",
                "about:blank"]  # fmt: skip
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log, preexec_fn=child_fds, close_fds=False
        )
        os.close(cmd_r)
        os.close(res_w)
        self._buf, self._id, self.events = b"", 0, []
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=self.session)

    def _next(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            ready, _, _ = select.select([self._res_r], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._res_r, 1 << 16)
            if not chunk:
                raise EOFError("Chromium closed the pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def wait(self, pred: Any, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            msg = self._next(deadline)
            if "method" in msg:
                self.events.append(msg)
            if pred(msg):
                return msg

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        self._id += 1
        msg: dict[str, Any] = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._cmd_w, json.dumps(msg).encode() + b"\0")
        answer = self.wait(lambda m, i=self._id: m.get("id") == i)
        assert "error" not in answer, answer
        return answer.get("result", {})

    def inspect(self, path: Path) -> dict[str, list[Any]]:
        """Load ``path``; returns each image's ``[naturalWidth, naturalHeight]`` after ``decode()`` (``[0, error]``
        when it fails), the console errors / exceptions and the URLs requested other than the page and data:."""
        start = len(self.events)
        url = path.resolve().as_uri()
        self.send("Page.navigate", {"url": url}, self.session)
        self.wait(lambda m: m.get("method") == "Page.loadEventFired")
        expr = ("Promise.all(Array.from(document.images, i => i.decode().then("
                "() => [i.naturalWidth, i.naturalHeight], e => [0, String(e)])))")  # fmt: skip
        images = self.send("Runtime.evaluate", {"expression": expr, "awaitPromise": True, "returnByValue": True},
                           self.session)["result"]["value"]  # fmt: skip
        errors, requests = [], []
        for ev in self.events[start:]:
            method, p = ev["method"], ev.get("params", {})
            if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                errors.append(("console", [a.get("value") for a in p.get("args", [])]))
            elif method == "Runtime.exceptionThrown":
                errors.append(("exception", p.get("exceptionDetails", {}).get("text")))
            elif method == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
                errors.append(("log", p["entry"].get("text")))
            elif method == "Network.requestWillBeSent":
                req = p.get("request", {}).get("url", "")
                if req != url and not req.startswith("data:"):
                    requests.append(req)
        return {"images": images, "errors": errors, "requests": requests}

    def close(self) -> None:
        try:
            self.send("Browser.close")
            self.proc.wait(timeout=20)
        except (OSError, EOFError, TimeoutError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            os.close(self._cmd_w)
            os.close(self._res_r)
            self._log.close()


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Any:
    if not Path(CHROMIUM).is_file() or shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is absent (as root: apt-get install chromium chromium-driver)")
    root = tmp_path_factory.mktemp("chromium")
    browser = Chromium(root / "profile", root / "chromium.log")
    yield browser
    browser.close()


def test_report_renders_in_chromium(chromium: Chromium, full_report: Path) -> None:
    found = chromium.inspect(full_report)
    n_img = len(Page(full_report.read_text()).imgs)
    assert len(found["images"]) == n_img == 3
    assert all(isinstance(w, int) and w > 0 and h > 0 for w, h in found["images"]), found["images"]
    assert found["errors"] == [] and found["requests"] == []


def test_chromium_check_detects_broken_pages(chromium: Chromium, tmp_path: Path) -> None:
    """The checker itself can fail: a broken image, a console error and an external request are all reported."""
    bad = tmp_path / "bad.html"
    good_png = base64.b64encode(PNG_SIGNATURE + b"not really a png").decode()
    bad.write_text(
        f'<!DOCTYPE html><html><body><img src="data:image/png;base64,{good_png}">'
        '<img src="http://127.0.0.1:9/x.png"><script>console.error("boom")</script></body></html>'
    )
    found = chromium.inspect(bad)
    assert [w for w, _ in found["images"]] == [0, 0]
    assert ("console", ["boom"]) in found["errors"]
    assert found["requests"] == ["http://127.0.0.1:9/x.png"]
    with pytest.raises(binascii.Error):
        base64.b64decode("@@@", validate=True)


def test_ifia_table_counts_flat_starts_and_marks_results_without_the_count() -> None:
    from attrobust.experiments.report import ifia_table

    today = fake_result(0.9, 0.5, [0.5, 1.0, 0.2], [0.1, 1.0, 0.0], [True, True, False])
    today["summary"]["ifia"]["flat_start"] = 1
    older = fake_result(0.9, 0.5, [0.5, 0.2], [0.1, 0.0], [True, True])  # stored before the count existed
    header, rows = ifia_table({"today": today, "older": older})
    assert header[:4] == ["model", "attacked", "no-valid", "flat-start"]
    assert [row[:4] for row in rows] == [["today", "3", "1", "1"], ["older", "2", "0", "-"]]
