"""Non-finite settings and weights never become a saved model or a reported accuracy (issue 12, section 4):
configs refuse NaN/inf floats, the trainer stops at the step whose update broke the weights (the last good
checkpoint stays), and loading, evaluating or auditing non-finite weights is a clear error."""

from __future__ import annotations

import importlib
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from attrobust import models
from attrobust.cli import app
from attrobust.experiments import audit as audit_lib
from attrobust.experiments.config import OptimConfig, TrainConfig, from_dict, load_yaml, merge, to_dict
from attrobust.experiments.train import train

train_lib = importlib.import_module("attrobust.experiments.train")

BASE = {
    "name": "tiny",
    "seed": 0,
    "data": {"name": "synthetic", "kwargs": {"n": 64, "size": 8, "num_classes": 3}, "test_subset": 16},
    "model": {"name": "small_cnn"},
    "optim": {"name": "adam", "lr": 1e-2},
    "steps": 6,
    "batch_size": 16,
    "checkpoint_every": 2,
}


def config(tmp_path: Path, **changes: object) -> TrainConfig:
    return merge(from_dict(TrainConfig, {**BASE, "out_dir": str(tmp_path / "runs")}), dict(changes))


def nonfinite_checkpoint(tmp_path: Path) -> Path:
    """A checkpoint file as an earlier version could write it: small_cnn with its run config, one NaN weight."""
    model = models.create("small_cnn", 3, in_channels=1, input_size=8)
    path = models.save(model, tmp_path / "nan.pt", config=to_dict(config(tmp_path)))
    payload = torch.load(path, weights_only=True)
    name = next(k for k, v in payload["state_dict"].items() if v.is_floating_point())
    payload["state_dict"][name][0] = math.nan
    torch.save(payload, path)
    return path


# --- configs ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"optim": {"lr": math.inf}}, "optim.lr"),
        ({"optim": {"lr": math.nan}}, "optim.lr"),
        ({"optim": {"weight_decay": math.inf}}, "optim.weight_decay"),
        ({"optim": {"name": "sgd", "momentum": math.nan}}, "optim.momentum"),
        ({"optim": {"schedule": "multistep", "milestones": [2.0, math.inf]}}, "optim.milestones[1]"),
        ({"optim": {"gamma": math.nan}}, "optim.gamma"),
        ({"objective": {"name": "pgd_at", "params": {"eps": math.nan}}}, "objective.params.eps"),
        ({"objective": {"name": "trades", "params": {"beta": -math.inf}}}, "objective.params.beta"),
        ({"model": {"name": "small_cnn", "kwargs": {"scale": math.inf}}}, "model.kwargs.scale"),
    ],
)
def test_train_config_refuses_non_finite_floats_naming_the_key(tmp_path, changes, key):
    with pytest.raises(ValueError, match=re.escape(f"{key}: expected a finite number")):
        config(tmp_path, **changes)


def test_yaml_inf_and_overrides_are_refused_before_training(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({**BASE, "out_dir": str(tmp_path / "runs")}).replace("lr: 0.01", "lr: .inf"))
    with pytest.raises(ValueError, match=r"run.yaml: optim.lr: expected a finite number, got inf"):
        load_yaml(TrainConfig, path)
    with pytest.raises(ValueError, match=r"optim.lr: expected a finite number, got nan"):
        OptimConfig(lr=math.nan)
    result = CliRunner().invoke(app, ["train", str(path), "--set", "optim.lr=1e-2", "--set", "optim.lr=.inf", "-q"])
    assert result.exit_code == 2 and "error:" in result.output and "optim.lr: expected a finite" in result.output
    assert not (tmp_path / "runs").exists()


# --- the trainer -----------------------------------------------------------------------------------------------


def test_a_step_that_breaks_the_weights_stops_training_and_saves_nothing(tmp_path):
    # finite settings whose first (and last) update overflows float32: lr * weight_decay * w is far beyond 3.4e38
    cfg = config(tmp_path, optim={"name": "sgd", "lr": 1e38, "momentum": 0.0, "weight_decay": 100.0}, steps=1)
    with pytest.raises(ValueError, match=r"expected finite weights after the update of step 0, got \d+ NaN/inf"):
        train(cfg, progress=False, db=False)
    run = tmp_path / "runs" / "tiny"
    assert not (run / "model.pt").exists() and not (run / "state.pt").exists()


class _InfGrad(torch.autograd.Function):
    """Adds 0 to the loss and an infinite gradient to ``p``: a finite loss whose update breaks the weights."""

    @staticmethod
    def forward(ctx, p: torch.Tensor) -> torch.Tensor:
        ctx.shape = p.shape
        return p.new_zeros(())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad.new_full(ctx.shape, math.inf)


def _poison_step(monkeypatch: pytest.MonkeyPatch, at_call: int) -> None:
    real = train_lib.objectives_lib.create

    def create(name: str, **params: object):
        objective, calls = real(name, **params), []

        def poisoned(model, x, y, *, generator=None):
            calls.append(1)
            loss, logs = objective(model, x, y, generator=generator)
            if len(calls) == at_call:
                loss = loss + _InfGrad.apply(next(model.parameters()))
            return loss, logs

        return poisoned

    monkeypatch.setattr(train_lib.objectives_lib, "create", create)


def test_the_last_good_checkpoint_stays(tmp_path, monkeypatch):
    _poison_step(monkeypatch, at_call=4)  # the update of global step 3; checkpoints every 2 steps
    with pytest.raises(ValueError, match=r"after the update of step 3, got \d+ NaN/inf entries in '.*weight'"):
        train(config(tmp_path), progress=False, db=False)
    run = tmp_path / "runs" / "tiny"
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (run / "model.pt").exists()
    # a state written with non-finite weights is refused on resume instead of training on from it
    state["model"][next(k for k in state["model"] if k.endswith("weight"))].fill_(math.nan)
    torch.save(state, run / "state.pt")
    monkeypatch.undo()
    with pytest.raises(ValueError, match=r"state.pt \(use force=True to retrain\): expected finite weights"):
        train(config(tmp_path), resume=True, progress=False, db=False)


# --- saving, loading, evaluating, auditing ---------------------------------------------------------------------


def test_first_nonfinite_is_exact_when_a_finite_sum_overflows():
    big = torch.full((4,), 3e38)  # finite entries whose float32 sum is inf
    assert models.first_nonfinite([("a", torch.zeros(2)), ("big", big)]) is None
    assert models.first_nonfinite([("a", torch.zeros(2)), ("b", torch.tensor([1.0, -math.inf, math.nan]))]) == ("b", 2)
    assert models.first_nonfinite([("steps", torch.tensor(3)), ("b", torch.ones(2, dtype=torch.float64))]) is None


def test_save_and_load_refuse_non_finite_weights_naming_file_and_tensor(tmp_path):
    path = nonfinite_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"nan.pt: expected finite weights, got 1 NaN/inf entries of \d+ in '"):
        models.load(path)
    model = models.create("small_cnn", 3, in_channels=1, input_size=8)
    with torch.no_grad():
        next(model.parameters()).view(-1)[1] = -math.inf
    with pytest.raises(ValueError, match=r"model to save to .*out.pt: expected finite weights"):
        models.save(model, tmp_path / "out.pt")
    assert not (tmp_path / "out.pt").exists()


def test_evaluate_command_refuses_a_non_finite_checkpoint(tmp_path):
    path = nonfinite_checkpoint(tmp_path)
    result = CliRunner().invoke(app, ["evaluate", str(path), "--n", "4", "--attack", "none", "-q"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and "expected finite weights" in result.output and "Traceback" not in result.output


def test_audit_refuses_non_finite_user_weights(tmp_path):
    model = models.create("small_cnn", 3, in_channels=1, input_size=8)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name].view(-1)[0] = math.nan
    torch.save(state, tmp_path / "w.pt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(
        ValueError, match=rf"weights: .*w.pt: expected finite weights, got 1 NaN/inf entries .* '{name}'"
    ):
        audit_lib.load_weights(model, tmp_path / "w.pt")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was loaded
