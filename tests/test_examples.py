"""Saliency examples stored at evaluation time: they are the evaluation's own samples, perturbations and
measurements; storing them changes no number; none without IFIA; the same under torchrun as in one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from scipy.stats import kendalltau

from attrobust import data, models
from attrobust.experiments import examples as examples_lib
from attrobust.experiments import protocol as protocol_lib
from attrobust.experiments.config import EvalConfig, from_dict, merge
from attrobust.experiments.evaluate import evaluate
from test_report import DATA_KWARGS, train_tiny
from test_report import FAST as REPORT_FAST

FAST = {**REPORT_FAST, "batch_size": 3, "examples": 3}  # several batches, examples from more than one


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def evaluated(checkpoint: Path) -> dict[str, Any]:
    results = evaluate(checkpoint, from_dict(EvalConfig, FAST), progress=False, out=checkpoint.parent / "one.json",
                       db=False)  # fmt: skip
    assert results["summary"]["ifia"]["attacked"] > 3, "examples come from several batches of 3"
    return results


def test_examples_are_the_evaluations_own(checkpoint: Path, evaluated: dict[str, Any]) -> None:
    ref = evaluated["examples"]
    assert ref["file"] == "one.examples.npz" and ref["count"] == 3
    assert json.loads((checkpoint.parent / "one.json").read_text())["examples"] == ref, "referenced by results.json"
    ex = examples_lib.load(evaluated)
    assert ex is not None
    cols, cfg = evaluated["per_example"]["ifia"], evaluated["eval_config"]["ifia"]
    assert ex.indices.tolist() == cols["index"][:3], "the first correctly classified samples IFIA attacked"
    assert ex.topk.tolist() == cols["topk"][:3] and ex.kendall.tolist() == cols["kendall"][:3]
    assert ex.valid.tolist() == cols["valid"][:3]
    ds = data.load("synthetic", "test", **DATA_KWARGS)
    np.testing.assert_array_equal(ex.images, ds.images[ex.indices].numpy())
    np.testing.assert_array_equal(ex.labels, ds.labels[ex.indices].numpy())
    assert ex.classes.tolist() == [ds.classes[int(label)] for label in ex.labels]
    assert ex.maps.shape == ex.adv_maps.shape == (3, 8, 8) and ex.adv_images.shape == ex.images.shape
    assert ex.k == cfg["k"] and ex.attribution == cfg["attribution"]
    assert np.abs(ex.adv_images - ex.images).max() <= cfg["eps"] + 1e-6
    assert ex.adv_images.min() >= 0 and ex.adv_images.max() <= 1
    model, _ = models.load(checkpoint)
    with torch.no_grad():
        adv_pred = model(torch.from_numpy(ex.adv_images)).argmax(1).numpy()
    for i in range(3):
        if not ex.valid[i]:
            assert ex.topk[i] == ex.kendall[i] == 1.0
            continue
        assert adv_pred[i] == ex.labels[i], "the stored perturbation keeps the label"
        a, b = ex.maps[i].ravel(), ex.adv_maps[i].ravel()
        assert ex.kendall[i] == pytest.approx(kendalltau(a, b).statistic, abs=1e-5), "the maps are the measured ones"
        top_a, top_b = set(np.argsort(-a)[: ex.k]), set(np.argsort(-b)[: ex.k])
        assert ex.topk[i] == pytest.approx(len(top_a & top_b) / ex.k)
    with np.load(checkpoint.parent / ref["file"], allow_pickle=False) as f:
        assert all(f[key].dtype != object for key in f.files), "plain arrays, no pickle"


def test_storing_examples_changes_no_number(checkpoint: Path, evaluated: dict[str, Any]) -> None:
    none = evaluate(checkpoint, from_dict(EvalConfig, {**FAST, "examples": 0}), progress=False,
                    out=checkpoint.parent / "none.json", db=False)  # fmt: skip
    assert none["examples"] is None and not (checkpoint.parent / "none.examples.npz").exists()
    assert none["per_example"] == evaluated["per_example"] and none["summary"] == evaluated["summary"]
    assert none["protocol_fingerprint"] == evaluated["protocol_fingerprint"], "examples are not protocol"
    no_ifia = evaluate(checkpoint, from_dict(EvalConfig, {**FAST, "skip_ifia": True}), progress=False,
                       out=checkpoint.parent / "no_ifia.json", db=False)  # fmt: skip
    assert no_ifia["examples"] is None and examples_lib.load(no_ifia) is None
    in_memory = evaluate(models.load(checkpoint)[0], from_dict(EvalConfig, {**FAST, "dataset": "synthetic"}),
                         dataset=data.load("synthetic", "test", **DATA_KWARGS), progress=False, db=False)  # fmt: skip
    assert in_memory["examples"] is None, "nothing written without a results file"
    with pytest.raises(ValueError, match="examples: expected a value >= 0"):
        from_dict(EvalConfig, {**FAST, "examples": -1})
    base = from_dict(EvalConfig, FAST)
    configs = (base, merge(base, {"examples": 9}))
    fp = [protocol_lib.fingerprint(protocol_lib.describe(c, {"name": "x"})) for c in configs]
    assert fp[0] == fp[1]


def test_random_attributions_leave_the_global_random_state_alone() -> None:
    torch.manual_seed(0)
    model = models.create("small_cnn", in_channels=1, num_classes=3, input_size=8).eval()
    x, y = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 2, 0])
    cols = {"local": [0, 1, 2, 3], "topk": [0.5] * 4, "kendall": [0.1] * 4, "valid": [True] * 4}
    cfg = from_dict(EvalConfig, {**FAST, "ifia": {**FAST["ifia"], "attribution": "smoothgrad"}})
    state = torch.get_rng_state()
    first = examples_lib.of_batch(model, x, x.clone(), y, cols, cfg, seed=7)
    assert torch.equal(state, torch.get_rng_state())
    again = examples_lib.of_batch(model, x, x.clone(), y, cols, cfg, seed=7)
    assert first is not None and again is not None and first["maps"].shape == (3, 8, 8)
    np.testing.assert_array_equal(first["maps"], again["maps"])


def test_merge_keeps_the_first_examples_in_batch_order() -> None:
    def part(local: list[int]) -> dict[str, np.ndarray]:
        return {"local": np.array(local), "label": np.array(local) * 10}

    parts = [(part([1]), torch.tensor([5, 6])), (None, torch.tensor([7])), (part([0, 2]), torch.tensor([8, 9, 4]))]
    merged = examples_lib.merge(parts, 2)
    assert merged is not None and merged["index"].tolist() == [6, 8] and merged["label"].tolist() == [10, 0]
    assert examples_lib.merge(parts[1:2], 2) is None
    cfg = from_dict(EvalConfig, FAST)
    assert examples_lib.wanted([{"examples": part([0, 1])}, {"examples": None}], cfg)
    assert not examples_lib.wanted([{"examples": part([0, 1, 2])}], cfg)
    assert not examples_lib.wanted([], merge(cfg, {"skip_ifia": True}))


def test_two_process_evaluation_stores_the_same_examples(checkpoint: Path, evaluated: dict[str, Any]) -> None:
    run_dir = checkpoint.parent
    (run_dir / "eval.yaml").write_text(yaml.safe_dump(FAST))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "attrobust",
           "evaluate", str(checkpoint), "--config", "eval.yaml", "--out", "two.json", "--quiet", "--no-db"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    multi = json.loads((run_dir / "two.json").read_text())
    assert multi["processes"] == 2 and multi["per_example"] == evaluated["per_example"]
    assert multi["examples"]["file"] == "two.examples.npz"
    one, two = examples_lib.load(evaluated), examples_lib.load({**multi, "path": str(run_dir / "two.json")})
    assert one is not None and two is not None
    for name in ("images", "adv_images", "maps", "adv_maps", "topk", "kendall", "valid", "indices", "labels"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name), err_msg=name)
