"""Evaluation: sample selection, accuracies, IFIA on correct samples only, summaries, JSON results, table."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from attrobust import data
from attrobust.experiments.config import EvalConfig, TrainConfig, from_dict
from attrobust.experiments.evaluate import (
    evaluate,
    format_table,
    select_indices,
    summarize,
    table_row,
)
from attrobust.experiments.train import train

FAST = {
    "n": 24,
    "batch_size": 10,
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 3},
    "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small_cnn trained a few steps on 8x8 synthetic data (some test samples stay misclassified)."""
    out = tmp_path_factory.mktemp("runs")
    cfg = from_dict(
        TrainConfig,
        {
            "name": "tiny",
            "data": {"name": "synthetic", "kwargs": {"n": 96, "size": 8, "num_classes": 3, "noise": 0.6}},
            "model": {"name": "small_cnn"},
            "optim": {"lr": 1e-2},
            "steps": 6,
            "batch_size": 16,
            "out_dir": str(out),
        },
    )
    result = train(cfg, progress=False)
    return result.model_path


def test_evaluate_checkpoint_returns_all_keys_and_writes_json(checkpoint: Path) -> None:
    cfg = from_dict(EvalConfig, FAST)
    res = evaluate(checkpoint, cfg, progress=False)
    path = checkpoint.parent / "results.json"
    assert res["path"] == str(path) and path.is_file()
    saved = json.loads(path.read_text())
    assert {"checkpoint", "checkpoint_sha256", "dataset", "eval_config", "train_config", "summary", "per_example",
            "timings", "torch_version", "created"} <= set(saved)  # fmt: skip
    assert saved["eval_config"] == json.loads(json.dumps(res["eval_config"]))
    assert from_dict(EvalConfig, saved["eval_config"]) == cfg
    assert saved["train_config"]["data"]["name"] == "synthetic"
    assert saved["torch_version"] == torch.__version__
    assert saved["dataset"] == {"name": "synthetic", "split": "test", "size": 96}
    s = saved["summary"]
    assert {"n", "natural_acc", "pgd_acc", "topk", "kendall", "no_valid", "ifia"} <= set(s)
    assert s["n"] == 24 and 0 < s["natural_acc"] < 1, "the fixture model should be imperfect"
    assert 0 <= s["pgd_acc"] <= 1
    pe = saved["per_example"]
    assert pe["index"] == list(range(24)) and len(pe["natural_correct"]) == 24 == len(pe["pgd_correct"])
    correct = [i for i, c in zip(pe["index"], pe["natural_correct"], strict=True) if c]
    assert pe["ifia"]["index"] == correct, "IFIA runs on the correctly classified samples only"
    assert s["ifia"]["attacked"] == len(correct) == len(pe["ifia"]["topk"]) == len(pe["ifia"]["kendall"])
    for key in ("topk", "kendall"):
        vals = np.array(pe["ifia"][key])
        valid = np.array(pe["ifia"]["valid"])
        table = np.where(valid, vals, 1.0)
        assert s[key] == pytest.approx(table.mean())
        assert s["ifia"][key]["median"] == pytest.approx(np.median(table))
    assert s["no_valid"] == int((~np.array(pe["ifia"]["valid"])).sum())
    assert set(saved["timings"]) == {"natural", "pgd", "ifia", "total"}


def test_evaluation_is_reproducible_and_seeded(checkpoint: Path, tmp_path: Path) -> None:
    cfg = from_dict(EvalConfig, FAST)
    a = evaluate(checkpoint, cfg, progress=False, out=tmp_path / "a.json")
    b = evaluate(checkpoint, cfg, progress=False, out=tmp_path / "b.json")
    assert a["per_example"] == b["per_example"] and a["summary"] == b["summary"]
    assert (tmp_path / "a.json").is_file()


def test_in_memory_model_dataset_and_mode(checkpoint: Path) -> None:
    from attrobust import models

    model, _ = models.load(checkpoint)
    model.train()
    ds = data.load("synthetic", "test", n=40, size=8, num_classes=3, noise=0.6)
    cfg = from_dict(EvalConfig, {**FAST, "skip_pgd": True, "skip_ifia": True, "n": None})
    res = evaluate(model, cfg, dataset=ds, progress=False)
    assert model.training is True, "the caller's mode is restored"
    assert "path" not in res, "nothing is written for an in-memory model without out"
    s = res["summary"]
    assert s["n"] == 40 and s["pgd_acc"] is None and s["topk"] is None and s["ifia"] is None
    with torch.no_grad():
        expected = (model.eval()(ds.images).argmax(1) == ds.labels).double().mean()
    assert s["natural_acc"] == pytest.approx(float(expected))
    with pytest.raises(ValueError, match=r"dataset: expected EvalConfig\.dataset"):
        evaluate(model, cfg, progress=False)
    with pytest.raises(ValueError, match=r"expected an nn\.Module or a checkpoint path"):
        evaluate(42, cfg, progress=False)  # type: ignore[arg-type]


def test_mixed_submodule_modes_come_back_exactly(checkpoint: Path) -> None:
    from attrobust import models

    model, _ = models.load(checkpoint)
    model.train()
    frozen = [m for m in model.modules() if m is not model][:2]  # e.g. a frozen batch norm inside a training net
    for m in frozen:
        m.eval()
    before = [(name, m.training) for name, m in model.named_modules()]
    ds = data.load("synthetic", "test", n=12, size=8, num_classes=3, noise=0.6)
    evaluate(model, from_dict(EvalConfig, {**FAST, "n": None, "skip_ifia": True}), dataset=ds, progress=False)
    assert [(name, m.training) for name, m in model.named_modules()] == before


def test_pgd_with_zero_budget_keeps_natural_accuracy(checkpoint: Path, tmp_path: Path) -> None:
    cfg = from_dict(EvalConfig, {**FAST, "skip_ifia": True, "pgd": {"eps": 0.0, "step_size": 0.05, "steps": 2}})
    res = evaluate(checkpoint, cfg, progress=False, out=tmp_path / "r.json")
    assert res["per_example"]["pgd_correct"] == res["per_example"]["natural_correct"]
    strong = from_dict(EvalConfig, {**FAST, "skip_ifia": True, "pgd": {"eps": 0.5, "step_size": 0.1, "steps": 10}})
    res2 = evaluate(checkpoint, strong, progress=False, out=tmp_path / "r2.json")
    assert res2["summary"]["pgd_acc"] < res2["summary"]["natural_acc"]


def test_select_indices() -> None:
    assert select_indices(10, EvalConfig(n=4)).tolist() == [0, 1, 2, 3]
    assert select_indices(10, EvalConfig(n=None)).tolist() == list(range(10))
    seeded = select_indices(100, EvalConfig(n=5, sample="seeded", seed=1))
    assert torch.equal(seeded, select_indices(100, EvalConfig(n=5, sample="seeded", seed=1)))
    assert not torch.equal(seeded, select_indices(100, EvalConfig(n=5, sample="seeded", seed=2)))
    assert len(set(seeded.tolist())) == 5 and seeded.max() < 100
    with pytest.raises(ValueError, match="n: expected at most the 10 samples"):
        select_indices(10, EvalConfig(n=11))


def test_summarize_counts_invalid_as_one_and_reports_valid_only_mean() -> None:
    values = torch.tensor([0.2, 0.4, 0.9, 0.0], dtype=torch.float64)
    valid = torch.tensor([True, True, True, False])
    s = summarize(values, valid)
    table = np.array([0.2, 0.4, 0.9, 1.0])
    assert s["mean"] == pytest.approx(table.mean())
    assert s["std"] == pytest.approx(table.std())
    assert s["median"] == pytest.approx(np.median(table))
    assert (s["q25"], s["q75"]) == pytest.approx((np.quantile(table, 0.25), np.quantile(table, 0.75)))
    assert s["valid_mean"] == pytest.approx(0.5)
    empty = summarize(torch.tensor([0.3], dtype=torch.float64), torch.tensor([False]))
    assert empty["mean"] == 1.0 and empty["valid_mean"] is None
    assert summarize(torch.zeros(0), torch.zeros(0, dtype=torch.bool))["mean"] is None


def test_table_row_and_format() -> None:
    results = {"summary": {"natural_acc": 0.9912, "pgd_acc": None, "topk": 0.61234, "kendall": 0.5, "no_valid": 2,
                           "ifia": {"attacked": 90}}}  # fmt: skip
    row = table_row("natural", results)
    assert row == {"model": "natural", "natural acc": "99.12%", "PGD acc": "-", "top-k": "0.6123",
                   "Kendall": "0.5000", "no-valid": "2/90"}  # fmt: skip
    lines = format_table([row, table_row("x", {"summary": {"natural_acc": 0.5}})]).splitlines()
    assert len(lines) == 4 and lines[0].startswith("model")
    assert len({len(line) for line in lines}) == 1, "columns are aligned"


def test_ifia_random_start_reaches_the_attack(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from attrobust import attacks

    seen = []
    original = attacks.ifia

    def spy(*args, **kwargs):
        seen.append(kwargs["random_start"])
        return original(*args, **kwargs)

    monkeypatch.setattr(attacks, "ifia", spy)
    for flag in (False, True):
        cfg = from_dict(EvalConfig, {**FAST, "n": 6, "skip_pgd": True, "ifia": {**FAST["ifia"], "random_start": flag}})
        evaluate(checkpoint, cfg, progress=False, out=checkpoint.parent / f"rs{flag}.json", db=False)
    assert seen and set(seen) == {False, True}


def test_evaluate_passes_eval_k_and_restart_from_to_ifia(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import importlib

    evaluate_module = importlib.import_module("attrobust.experiments.evaluate")

    seen: list[dict] = []
    real = evaluate_module.attacks.ifia

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_module.attacks, "ifia", spy)
    cfg = from_dict(EvalConfig, {**FAST, "n": 6, "skip_pgd": True,
                                 "ifia": {**FAST["ifia"], "eval_k": 4, "restart_from": "clean"}})  # fmt: skip
    evaluate(checkpoint, cfg, progress=False, db=False, out=tmp_path / "r.json")
    assert seen and all((kw["k"], kw["eval_k"], kw["restart_from"]) == (8, 4, "clean") for kw in seen)


def test_flat_starts_are_counted_stored_and_announced(checkpoint: Path) -> None:
    # images with at most k lit pixels: IG (black baseline) is 0 elsewhere, so the top-k attack from the clean image
    # starts where its objective is flat; the evaluation marks each such image and prints how many there were
    from attrobust import models
    from attrobust.attacks import ifia_flat_start
    from attrobust.data import ImageDataset

    model, _ = models.load(checkpoint)
    ds = data.load("synthetic", "test", n=40, size=8, num_classes=3, noise=0.6)
    images = ds.images.clone()
    g = torch.Generator().manual_seed(0)
    for i in range(0, 40, 2):  # every other image keeps 6 of its pixels
        dark = torch.randperm(64, generator=g)[6:]
        images[i].flatten(1)[:, dark] = 0.0
    sparse = ImageDataset(images, ds.labels, ds.classes, "synthetic-sparse")
    cfg = from_dict(EvalConfig, {**FAST, "n": None, "skip_pgd": True})
    said: list[str] = []
    res = evaluate(model, cfg, dataset=sparse, progress=False, echo=said.append)
    cols, stats = res["per_example"]["ifia"], res["summary"]["ifia"]
    attacked = torch.tensor(cols["index"])
    expected = ifia_flat_start(model, images[attacked], ds.labels[attacked], k=8, ig_steps=3).tolist()
    assert cols["flat_start"] == expected and 0 < sum(expected) < len(expected)
    assert stats["flat_start"] == sum(expected)
    notes = [line for line in said if "flat point" in line]
    assert notes == [notes[0]] and notes[0].startswith(f"note: {sum(expected)} of {stats['attacked']} attacked")
    randomly = from_dict(EvalConfig, {**FAST, "n": None, "skip_pgd": True,
                                      "ifia": {**FAST["ifia"], "random_start": True}})  # fmt: skip
    said.clear()
    res = evaluate(model, randomly, dataset=sparse, progress=False, echo=said.append)
    assert res["summary"]["ifia"]["flat_start"] == 0 and not any(res["per_example"]["ifia"]["flat_start"])
    assert not [line for line in said if "flat point" in line]
