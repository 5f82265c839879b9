"""Training and evaluation under torchrun (2 CPU processes, gloo): the merged evaluation equals the
single-process one exactly; 2-process training with the same global batch equals the single-process run up to
float rounding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from attrobust import models
from attrobust.experiments import distributed
from attrobust.experiments.config import EvalConfig, TrainConfig, from_dict
from attrobust.experiments.evaluate import evaluate
from attrobust.experiments.train import train

TRAIN = {
    "name": "ddp",
    "seed": 0,
    "data": {"name": "synthetic", "kwargs": {"n": 96, "size": 8, "num_classes": 3}, "test_subset": 0},
    "model": {"name": "small_cnn"},
    "optim": {"name": "adam", "lr": 1e-2},
    "steps": 6,
    "batch_size": 16,
    "checkpoint_every": 4,
    "log_every": 2,
}


def torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "attrobust", *args]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("objective", [{"name": "natural"},
                                       {"name": "pgd_at", "params": {"eps": 0.1, "step_size": 0.05, "steps": 2,
                                                                     "random_start": False}}])  # fmt: skip
def test_two_process_training_equals_one_process_with_the_same_global_batch(tmp_path: Path, objective: dict) -> None:
    cfg = {**TRAIN, "objective": objective}
    single = train(from_dict(TrainConfig, {**cfg, "out_dir": str(tmp_path / "one")}), progress=False, db=False)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**cfg, "out_dir": str(tmp_path / "two")}))
    proc = torchrun(tmp_path, "train", "cfg.yaml", "--quiet", "--no-db")
    assert proc.stdout.count("trained 6 steps") == 1, "only rank 0 reports"
    multi, _ = models.load(tmp_path / "two" / "ddp" / "model.pt")
    for (name, a), b in zip(single.model.state_dict().items(), multi.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    logs = [json.loads(line) for line in (tmp_path / "two" / "ddp" / "log.jsonl").read_text().splitlines()]
    ones = [json.loads(line) for line in (tmp_path / "one" / "ddp" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [2, 4, 6]
    for a, b in zip(ones, logs, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    state = torch.load(tmp_path / "two" / "ddp" / "state.pt", weights_only=True)
    assert len(state["generators"]) == 2


def test_two_process_evaluation_equals_one_process_exactly(tmp_path: Path) -> None:
    run = train(from_dict(TrainConfig, {**TRAIN, "objective": {"name": "natural"}, "out_dir": str(tmp_path)}),
                progress=False, db=False)  # fmt: skip
    eval_cfg = {"n": 20, "batch_size": 6, "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 3},
                "ifia": {"k": 10, "eps": 0.1, "step_size": 0.02, "steps": 3, "ig_steps": 4, "beta": 5.0,
                         "restarts": 1},
                "metrics": ["gini", "ssim", "road"], "suite": {"road_fractions": [0.3]}}  # fmt: skip
    single = evaluate(run.model_path, from_dict(EvalConfig, eval_cfg), progress=False,
                      out=tmp_path / "one.json", db=False)  # fmt: skip
    (tmp_path / "eval.yaml").write_text(yaml.safe_dump(eval_cfg))
    torchrun(tmp_path, "evaluate", str(run.model_path), "--config", "eval.yaml", "--out", "two.json", "--quiet",
             "--no-db")  # fmt: skip
    multi = json.loads((tmp_path / "two.json").read_text())
    assert multi["processes"] == 2 and single["processes"] == 1
    assert multi["per_example"] == single["per_example"]
    assert multi["summary"] == single["summary"]
    assert set(multi["per_example"]["metrics"]) == {"gini", "ssim", "road", "road_curve"}
    assert single["summary"]["ifia"]["attacked"] > 6, "several batches were attacked"


def test_single_process_context_needs_no_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = distributed.context()
    assert (ctx.rank, ctx.world, ctx.active, ctx.main) == (0, 1, False, True)
    assert distributed.gather({"a": 1}, ctx) == [{"a": 1}]
    assert distributed.mean_over_ranks({"a": 2.0}, ctx) == {"a": 2.0}
    assert ctx.device("cuda") == "cuda"
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE: expected an integer"):
        distributed.context()


def test_global_batch_must_split_evenly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "context", lambda device="cpu": distributed.Dist(rank=0, world=3))
    with pytest.raises(ValueError, match="multiple of the 3 processes"):
        train(from_dict(TrainConfig, {**TRAIN, "out_dir": str(tmp_path)}), progress=False, db=False)
