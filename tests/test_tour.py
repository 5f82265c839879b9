"""The README's "A 30-second tour", run as written on a tiny checkpoint: the README's training config shrunk to a
few steps stands in for ``runs/quickstart_pgd_at/model.pt``, and the attack budgets are small. Every public call
of the tour's Python blocks and its quick command lines is made here with the README's arguments otherwise."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import attrobust as ar
from attrobust.cli import app

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def tour() -> str:
    text = (REPO / "README.md").read_text()
    return text[text.index("## A 30-second tour") : text.index("\n## ", text.index("## A 30-second tour") + 1)]


def invoke(*args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.output)
    return result.output


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``attrobust train configs/quickstart_pgd_at.yaml`` shrunk to two steps on 128 images."""
    if not (mnist := _mnist_available()):
        pytest.skip(f"MNIST is not installed here ({mnist})")
    root = tmp_path_factory.mktemp("tour") / "runs"
    invoke("train", str(REPO / "configs/quickstart_pgd_at.yaml"), "--set", f"out_dir={root}", "--set", "steps=2",
           "--set", "data.train_subset=128", "--set", "data.test_subset=16", "--quiet")  # fmt: skip
    assert (root / "quickstart_pgd_at" / "model.pt").is_file()
    return root


def _mnist_available() -> bool | str:
    try:
        ar.data.load("mnist", "test")
    except (ValueError, FileNotFoundError) as err:
        return str(err)[:200] or False
    return True


def test_the_tour_names_the_calls_made_here() -> None:
    text = tour()
    for call in ("ar.data.load(", "ar.models.load(", "ar.attributions.integrated_gradients(", "ar.attacks.pgd(",
                 "ar.attacks.ifia(", "ar.metrics.saliency_map(", "ar.attributions.saliency(", "ar.metrics.kendall_tau(",
                 "ar.metrics.topk_intersection(", "ar.objective(", "ar.insert_smoothing(", "ar.models.create(",
                 "attrobust list", "attrobust list objectives", "attrobust show trades+igr",
                 "attrobust train configs/quickstart_pgd_at.yaml", "attrobust evaluate", "--num-samples",
                 "--metrics all", "attrobust bench tables", "attrobust runs", "attrobust leaderboard --dataset mnist",
                 "attrobust report"):  # fmt: skip
        assert call in text, call


def test_python_tour(runs: Path) -> None:
    test = ar.data.load("mnist", "test")
    model, meta = ar.models.load(runs / "quickstart_pgd_at" / "model.pt")
    x, y = test.images[:8], test.labels[:8]
    assert x.shape == (8, 1, 28, 28) and meta["config"]["name"] == "quickstart_pgd_at"

    ig = ar.attributions.integrated_gradients(model, x, y, steps=50)
    x_adv = ar.attacks.pgd(model, x, y, eps=0.3, step_size=0.01, steps=40)
    res = ar.attacks.ifia(model, x, y, k=200, eps=0.3, step_size=0.01, steps=3, beta=50.0, ig_steps=10)
    assert ig.shape == x_adv.shape == x.shape and float((x_adv - x).abs().max()) <= 0.3 + 1e-6
    assert res.topk.shape == res.kendall.shape == res.valid.shape == (8,)

    a, b = ar.metrics.saliency_map(ig), ar.metrics.saliency_map(ar.attributions.saliency(model, x, y))
    kendall, topk = ar.metrics.kendall_tau(a, b), ar.metrics.topk_intersection(a, b, k=100)
    assert kendall.shape == topk.shape == (8,)
    assert float(ar.metrics.kendall_tau(a[0].numpy(), b[0].numpy())) == pytest.approx(float(kendall[0]), abs=1e-6)

    objective = ar.objective("trades+igr", beta=6.0, lam=1.0, ig_steps=10, eps=0.3, step_size=0.01, steps=2)
    loss, logs = objective(model.train(), x, y)
    assert loss.dim() == 0 and torch.isfinite(loss) and {"loss", "acc", "kl", "igr"} <= set(logs)
    smoothed = ar.insert_smoothing(ar.models.create("wrn", in_channels=3, input_size=32), after="block1", kind="median")
    assert any(".smooth_" in f".{name}" for name, _ in smoothed.named_modules())


def test_command_line_tour(runs: Path, tmp_path: Path) -> None:
    checkpoint = str(runs / "quickstart_pgd_at" / "model.pt")
    assert "evaluate --metrics" in invoke("list")
    assert "\n  trades+igr: " in invoke("list", "objectives")
    assert invoke("show", "trades+igr").startswith("trades+igr (objective)\n")
    small = ["--pgd-steps", "2", "--restarts", "1", "--quiet"]
    out = invoke("evaluate", checkpoint, "--num-samples", "4", "--k", "100", "--eps", "0.3", "--steps", "2",
                 "--ig-steps", "2", *small)  # fmt: skip
    assert re.search(r"^quickstart_pgd_at +\| ", out, re.MULTILINE)
    out = invoke("evaluate", checkpoint, "--metrics", "all", "--n", "2", "--steps", "1", "--ig-steps", "2", *small,
                 "--set", "suite.stability_samples=1", "--set", "suite.road_fractions=[0.5]",
                 "--set", "suite.ssim_sigmas=[0.1]")  # fmt: skip
    assert "results:" in out
    assert "rar_mnist" in invoke("bench", "tables")
    db = str(runs / "attrobust.db")
    assert "quickstart_pgd_at" in invoke("runs", "--db", db)
    assert "quickstart_pgd_at" in invoke("leaderboard", "--dataset", "mnist", "--metric", "topk", "--db", db)
    results = sorted(str(p) for p in runs.glob("*/results*.json"))
    out = invoke("report", *results, "--out", str(tmp_path / "report"), "--quiet")
    assert (tmp_path / "report" / "report.html").is_file() and "html:" in out


def test_former_module_paths_still_import() -> None:
    import attrobust.cli
    from attrobust.experiments import cli as old_cli
    from attrobust.experiments import store as old_store
    from attrobust.experiments.results import store

    assert old_cli.app is attrobust.cli.app and old_cli.main is attrobust.cli.main
    assert old_store.open_store is store.open_store and old_store.Store is store.Store
