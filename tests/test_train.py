"""Configs (YAML, strict keys, overrides, presets) and the trainer (seeded, checkpointed, exactly resumable)."""

from __future__ import annotations

import importlib
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from attrobust import models
from attrobust.experiments.config import (
    DataConfig,
    EvalConfig,
    OptimConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_yaml,
    merge,
    save_yaml,
    to_dict,
)
from attrobust.experiments.train import epoch_permutation, lr_factor, train

REPO = Path(__file__).resolve().parents[1]
# the module (the package re-exports the function under the same name)
train_lib = importlib.import_module("attrobust.experiments.train")


def tiny_config(tmp_path: Path, **changes: object) -> TrainConfig:
    """small_cnn on 8x8 synthetic data with 3 classes: 96 training images, 6 steps per epoch of 16."""
    base = {
        "name": "tiny",
        "seed": 0,
        "data": {"name": "synthetic", "kwargs": {"n": 96, "size": 8, "num_classes": 3}, "test_subset": 32},
        "model": {"name": "small_cnn"},
        "optim": {"name": "adam", "lr": 1e-2},
        "steps": 12,
        "batch_size": 16,
        "checkpoint_every": 5,
        "log_every": 3,
        "out_dir": str(tmp_path / "runs"),
    }
    return merge(from_dict(TrainConfig, base), dict(changes))


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ----------------------------------------------------------------------------------------------------- config


def test_config_yaml_round_trip(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, objective={"name": "pgd_at", "params": {"eps": 0.1}}, optim={"schedule": "cosine"})
    path = save_yaml(cfg, tmp_path / "c.yaml")
    back = load_yaml(TrainConfig, path)
    assert back == cfg
    assert to_dict(back) == yaml.safe_load(path.read_text())
    ev = EvalConfig(n=7, ifia={"k": 5, "beta": None})
    assert load_yaml(EvalConfig, save_yaml(ev, tmp_path / "e.yaml")) == ev


def test_unknown_keys_name_the_key_and_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown config key lr; expected one of: name, seed, data"):
        from_dict(TrainConfig, {"name": "a", "steps": 1, "lr": 0.1})
    with pytest.raises(ValueError, match=r"unknown config key optim\.lrr; expected one of: optim\.name, optim\.lr"):
        from_dict(TrainConfig, {"name": "a", "steps": 1, "optim": {"lrr": 0.1}})
    with pytest.raises(ValueError, match=r"unknown config key ifia\.kk"):
        from_dict(EvalConfig, {"ifia": {"kk": 3}})
    path = tmp_path / "bad.yaml"
    path.write_text("name: a\nsteps: 2\nmodel: {nme: small_cnn}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown config key model\.nme"):
        load_yaml(TrainConfig, path)


def test_config_values_are_type_checked() -> None:
    assert from_dict(OptimConfig, {"lr": "1e-4"}).lr == pytest.approx(1e-4)  # YAML reads 1e-4 as a string
    assert from_dict(OptimConfig, {"lr": 1}).lr == 1.0
    with pytest.raises(ValueError, match=r"optim\.lr|lr: expected a number"):
        from_dict(OptimConfig, {"lr": "fast"})
    with pytest.raises(ValueError, match=r"name: expected one of 'adam', 'sgd'"):
        from_dict(OptimConfig, {"name": "rmsprop"})
    with pytest.raises(ValueError, match=r"batch_size: expected an integer"):
        from_dict(TrainConfig, {"name": "a", "steps": 1, "batch_size": 2.5})
    with pytest.raises(ValueError, match=r"nesterov: expected true or false"):
        from_dict(OptimConfig, {"nesterov": "yes"})
    with pytest.raises(ValueError, match="missing config key name"):
        from_dict(TrainConfig, {"steps": 3})
    with pytest.raises(ValueError, match="exactly one"):
        from_dict(TrainConfig, {"name": "a", "steps": 3, "epochs": 1})
    with pytest.raises(ValueError, match="exactly one"):
        TrainConfig(name="a")
    with pytest.raises(ValueError, match="path separators"):
        TrainConfig(name="a/b", steps=1)
    with pytest.raises(ValueError, match=r"optim\.lr"):
        OptimConfig(lr=0.0)
    with pytest.raises(ValueError, match="schedule 'step'"):
        OptimConfig(schedule="step", milestones=[1, 2])
    with pytest.raises(ValueError, match=r"ifia\.beta"):
        EvalConfig(ifia={"beta": -1.0})
    with pytest.raises(ValueError, match=r"data\.train_subset"):
        DataConfig(train_subset=0)


def test_overrides_set_dotted_paths_with_yaml_values(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    new = apply_overrides(
        cfg,
        ["optim.lr=1e-3", "data.kwargs.noise=0.3", "objective={name: pgd_at, params: {steps: 2}}", "epochs=2",
         "steps=null", "data.test_subset=null"],
    )  # fmt: skip
    assert new.optim.lr == pytest.approx(1e-3)
    assert new.data.kwargs == {"n": 96, "size": 8, "num_classes": 3, "noise": 0.3}
    assert new.objective.name == "pgd_at" and new.objective.params == {"steps": 2}
    assert (new.epochs, new.steps, new.data.test_subset) == (2, None, None)
    assert cfg.optim.lr == pytest.approx(1e-2), "overrides return a copy"
    with pytest.raises(ValueError, match=r"unknown config key optim\.foo"):
        apply_overrides(cfg, ["optim.foo.bar=1"])
    with pytest.raises(ValueError, match="KEY=VALUE"):
        apply_overrides(cfg, ["optim.lr"])
    with pytest.raises(ValueError, match="is not a mapping"):
        apply_overrides(cfg, ["optim.lr.x=1"])
    path = save_yaml(cfg, tmp_path / "c.yaml")
    assert load_yaml(TrainConfig, path, ["seed=7"]).seed == 7


def test_merge_is_deep_for_sections_and_whole_for_free_mappings(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    new = merge(cfg, {"optim": {"lr": 0.5}, "data": {"kwargs": {"n": 10}}})
    assert new.optim.name == "adam" and new.optim.lr == 0.5
    assert new.data.kwargs == {"n": 10} and new.data.name == "synthetic"


@pytest.mark.parametrize("name", ["quickstart_natural", "quickstart_pgd_at"])
def test_quickstart_presets_parse(name: str) -> None:
    cfg = load_yaml(TrainConfig, REPO / "configs" / f"{name}.yaml")
    assert cfg.name == name and cfg.data.name == "mnist"


# ---------------------------------------------------------------------------------------------------- trainer


def test_data_order_is_a_function_of_seed_and_epoch() -> None:
    a = epoch_permutation(0, 3, 50)
    assert torch.equal(a, epoch_permutation(0, 3, 50))
    assert sorted(a.tolist()) == list(range(50))
    assert not torch.equal(a, epoch_permutation(0, 4, 50))
    assert not torch.equal(a, epoch_permutation(1, 3, 50))


def test_lr_schedules() -> None:
    const = OptimConfig()
    step = OptimConfig(schedule="step", milestones=[2], gamma=0.5)
    multi = OptimConfig(schedule="multistep", milestones=[1, 3], gamma=0.1)
    cos = OptimConfig(schedule="cosine")
    spe, total = 10, 40
    assert [lr_factor(const, s, spe, total) for s in (0, 39)] == [1.0, 1.0]
    assert [lr_factor(step, s, spe, total) for s in (0, 19, 20, 39)] == [1.0, 1.0, 0.5, 0.5]
    assert [lr_factor(multi, s, spe, total) for s in (9, 10, 29, 30)] == pytest.approx([1.0, 0.1, 0.1, 0.01])
    assert [lr_factor(cos, s, spe, total) for s in (0, 20, 40)] == pytest.approx([1.0, 0.5, 0.0])


def test_multistep_takes_one_factor_per_milestone_in_epochs_or_steps() -> None:
    # ART paper appendix A.3 (SVHN): x0.1 at epochs 50 and 80, x0.5 at epoch 150
    art = OptimConfig(schedule="multistep", milestones=[50, 80, 150], gamma=[0.1, 0.1, 0.5])
    spe = 10
    got = [lr_factor(art, e * spe, spe, 2000) for e in (0, 49, 50, 79, 80, 149, 150, 199)]
    assert got == pytest.approx([1.0, 1.0, 0.1, 0.1, 0.01, 0.01, 0.005, 0.005])
    assert lr_factor(art, 50 * spe - 1, spe, 2000) == 1.0  # whole epochs
    # RAR appendix C.1.3 (a schedule in steps): x100 after 500 steps, x0.1 after 60,000
    rar = OptimConfig(schedule="multistep", milestones=[500, 60000], gamma=[100.0, 0.1], milestone_unit="step")
    assert [lr_factor(rar, s, 7, 70000) for s in (0, 499, 500, 59999, 60000)] == pytest.approx(
        [1.0, 1.0, 100.0, 100.0, 10.0])  # fmt: skip
    assert lr_factor(OptimConfig(schedule="step", milestones=[3], gamma=0.5, milestone_unit="step"), 7, 2, 9) == 0.25
    for bad in ({"milestones": [1, 2], "gamma": [0.1]}, {"schedule": "step", "milestones": [2], "gamma": [0.1]},
                {"schedule": "cosine", "gamma": [0.1]}, {"milestones": [1], "gamma": [-0.1]}):  # fmt: skip
        with pytest.raises(ValueError, match=r"optim\.gamma"):
            OptimConfig(**{"schedule": "multistep", **bad})
    assert from_dict(OptimConfig, {"gamma": "1e-1"}).gamma == 0.1


def test_training_reduces_the_loss_and_writes_the_run(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=18)
    result = train(cfg, progress=False)
    assert result.completed and not result.reused and result.step == 18 == result.total_steps
    first, last = result.history[0], result.history[-1]
    assert last["loss"] < 0.5 * first["loss"]
    assert [h["step"] for h in result.history] == [3, 6, 9, 12, 15, 18]
    run = tmp_path / "runs" / "tiny"
    assert {p.name for p in run.iterdir()} >= {"model.pt", "state.pt", "config.yaml", "log.jsonl"}
    assert load_yaml(TrainConfig, run / "config.yaml") == cfg
    assert len((run / "log.jsonl").read_text().splitlines()) == 6
    model, info = models.load(run / "model.pt")
    assert from_dict(TrainConfig, info["config"]) == cfg
    assert info["meta"]["steps"] == 18
    assert_identical(weights(model), weights(result.model))
    assert result.model.training is False
    assert result.test_acc is not None and result.test_acc > 0.6
    state = torch.load(run / "state.pt", weights_only=True)
    assert state["step"] == 18 and {"model", "optimizer", "scheduler", "generator", "torch_rng"} <= set(state)


def test_training_is_seeded(tmp_path: Path) -> None:
    a = train(tiny_config(tmp_path / "a", steps=4), progress=False)
    b = train(tiny_config(tmp_path / "b", steps=4), progress=False)
    c = train(tiny_config(tmp_path / "c", steps=4, seed=1), progress=False)
    assert_identical(weights(a.model), weights(b.model))
    assert not torch.equal(weights(a.model)["classifier.1.weight"], weights(c.model)["classifier.1.weight"])


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"objective": {"name": "pgd_at", "params": {"eps": 0.1, "step_size": 0.05, "steps": 2, "eps_warmup": 10}},
         "optim": {"name": "sgd", "lr": 0.05, "schedule": "multistep", "milestones": [1]}},
    ],
    ids=["natural-adam", "pgd_at-sgd-multistep"],
)  # fmt: skip
def test_resume_mid_epoch_gives_identical_weights(tmp_path: Path, changes: dict) -> None:
    full = train(tiny_config(tmp_path / "full", **changes), progress=False)
    cfg = tiny_config(tmp_path / "cut", **changes)
    part = train(cfg, progress=False, stop_after=8)  # 6 steps per epoch: stops in the middle of epoch 2
    assert not part.completed and part.model_path is None and part.step == 8
    assert not (tmp_path / "cut" / "runs" / "tiny" / "model.pt").exists()
    resumed = train(cfg, progress=False, resume=True)
    assert resumed.completed and resumed.step == 12
    assert [h["step"] for h in resumed.history] == [9, 12]
    assert_identical(weights(resumed.model), weights(full.model))
    log = [json.loads(line) for line in (tmp_path / "cut" / "runs" / "tiny" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [3, 6, 8, 9, 12]
    # the eps warm-up (logged as the mean over each log window) follows the global step across the interruption
    if "objective" in changes:
        assert [round(r["eps"], 6) for r in log] == [0.02, 0.05, 0.075, 0.09, 0.1]


def test_stop_after_never_moves_a_resumed_run_backwards(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    train(cfg, progress=False, stop_after=8)
    again = train(cfg, progress=False, resume=True, stop_after=5)
    assert again.step == 8 and not again.completed and again.history == []
    assert torch.load(tmp_path / "runs" / "tiny" / "state.pt", weights_only=True)["step"] == 8


def test_without_resume_an_unfinished_run_restarts(tmp_path: Path) -> None:
    full = train(tiny_config(tmp_path / "full"), progress=False)
    cfg = tiny_config(tmp_path / "cut")
    train(cfg, progress=False, stop_after=5)
    again = train(cfg, progress=False)
    assert again.step == 12 and again.history[0]["step"] == 3
    assert_identical(weights(again.model), weights(full.model))


def test_finished_run_is_reused_unless_forced(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, steps=3)
    first = train(cfg, progress=False)
    second = train(cfg, progress=False)
    assert second.reused and second.history == [] and second.step == 3
    assert_identical(weights(first.model), weights(second.model))
    forced = train(cfg, progress=False, force=True)
    assert not forced.reused and forced.history
    with pytest.raises(ValueError, match=r"different configuration \(differs in: optim\)"):
        train(merge(cfg, {"optim": {"lr": 0.5}}), progress=False)
    # settings that do not change the weights may differ
    assert train(merge(cfg, {"log_every": 1}), progress=False).reused


def test_resume_refuses_a_state_of_another_config(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path)
    train(cfg, progress=False, stop_after=2)
    with pytest.raises(ValueError, match="differs in: seed"):
        train(merge(cfg, {"seed": 5}), progress=False, resume=True)


def test_epochs_set_the_number_of_steps(tmp_path: Path) -> None:
    result = train(tiny_config(tmp_path, steps=None, epochs=2, data={"train_subset": 64}), progress=False)
    assert result.total_steps == 2 * (64 // 16) == result.step


def test_model_is_trained_in_train_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    modes: list[bool] = []
    create = train_lib.objectives_lib.create

    def spy(name: str, **params: object):
        inner = create(name, **params)

        def objective(model, x, y, *, generator=None):
            modes.append(model.training)
            assert generator is not None
            return inner(model, x, y, generator=generator)

        return objective

    monkeypatch.setattr(train_lib.objectives_lib, "create", spy)
    result = train(tiny_config(tmp_path, steps=3), progress=False)
    assert modes == [True, True, True] and result.model.training is False


def test_diverging_loss_and_bad_sizes_raise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="batch_size: expected at most the training set size 96"):
        train(tiny_config(tmp_path, batch_size=200), progress=False)
    with pytest.raises(ValueError, match="stop_after"):
        train(tiny_config(tmp_path), progress=False, stop_after=0)

    def nan_objective(name: str, **params: object):
        return lambda model, x, y, *, generator=None: (model(x).sum() * math.nan, {"loss": math.nan})

    monkeypatch.setattr(train_lib.objectives_lib, "create", nan_objective)
    with pytest.raises(ValueError, match="training diverged"):
        train(tiny_config(tmp_path / "nan"), progress=False)


def test_unknown_names_fail_before_training(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown objective"):
        train(tiny_config(tmp_path, objective={"name": "nope"}), progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        train(tiny_config(tmp_path, model={"name": "nope"}), progress=False)
    with pytest.raises(ValueError, match="unknown dataset"):
        train(tiny_config(tmp_path, data={"name": "nope"}), progress=False)


def test_init_starts_from_a_trained_run_and_rejects_another_architecture(tmp_path: Path) -> None:
    first = train(tiny_config(tmp_path, name="first"), progress=False)
    tuned = train(tiny_config(tmp_path, name="tuned", init=str(first.run_dir), steps=1, optim={"lr": 1e-12}),
                  progress=False)  # fmt: skip
    for (name, a), b in zip(first.model.state_dict().items(), tuned.model.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9, msg=name)
    fresh = train(tiny_config(tmp_path, name="fresh", steps=1, optim={"lr": 1e-12}), progress=False)
    key = "features.0.weight"
    assert not torch.allclose(fresh.model.state_dict()[key], first.model.state_dict()[key])
    with pytest.raises(ValueError, match="init: expected a checkpoint of the architecture"):
        other = tiny_config(tmp_path, name="other", model={"name": "mnist_cnn"}, init=str(first.model_path))
        train(other, progress=False)
    with pytest.raises(ValueError, match="init: expected a checkpoint file"):
        train(tiny_config(tmp_path, name="missing", init=str(tmp_path / "nope")), progress=False)


def test_init_into_a_model_with_inserted_smoothing_blocks(tmp_path: Path) -> None:
    first = train(tiny_config(tmp_path, name="plain"), progress=False)
    smoothing = {"name": "small_cnn", "kwargs": {"smoothing": [{"kind": "median", "kernel": 3}]}}
    tuned = train(tiny_config(tmp_path, name="smoothed", model=smoothing, init=str(first.run_dir), steps=1,
                              optim={"lr": 1e-12}), progress=False)  # fmt: skip
    plain = first.model.state_dict()
    for key, value in tuned.model.state_dict().items():
        if ".smooth_" in f".{key}":
            continue
        torch.testing.assert_close(value, plain[key], rtol=0, atol=1e-9, msg=key)
    with pytest.raises(ValueError, match="init: expected a checkpoint of the architecture"):
        train(tiny_config(tmp_path, name="back", init=str(tuned.model_path)), progress=False)


def test_speed_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"autocast: expected null \(no autocast\) or 'bf16'"):
        TrainConfig(name="x", steps=1, autocast="fp8")
    with pytest.raises(ValueError, match="channels_last: expected true or false"):
        TrainConfig(name="x", steps=1, channels_last="yes")


def test_channels_last_training_matches_the_default_layout(tmp_path: Path) -> None:
    plain = train(tiny_config(tmp_path, name="plain", steps=4), progress=False, db=False)
    seen = []
    real = train_lib.objectives_lib.create

    def recording(*args: object, **kw: object):
        objective = real(*args, **kw)

        def wrapped(model, x, y, **kws):
            seen.append((x.is_contiguous(memory_format=torch.channels_last),
                         model.features[0].weight.is_contiguous(memory_format=torch.channels_last)))  # fmt: skip
            return objective(model, x, y, **kws)

        return wrapped

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_lib.objectives_lib, "create", recording)
        cl = train(tiny_config(tmp_path, name="cl", steps=4, channels_last=True), progress=False, db=False)
    assert seen and all(x_cl and w_cl for x_cl, w_cl in seen)
    for (ka, a), (kb, b) in zip(weights(plain.model).items(), weights(cl.model).items(), strict=True):
        assert ka == kb
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    probe = torch.rand(2, 1, 8, 8)
    loaded, _ = models.load(cl.model_path)  # the saved weights load into the default layout
    torch.testing.assert_close(loaded.eval()(probe), cl.model(probe), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("objective", [{"name": "pgd_at", "params": {"eps": 0.1, "step_size": 0.05, "steps": 2}},
                                       {"name": "ig_norm", "params": {"eps": 0.1, "step_size": 0.05, "steps": 1,
                                                                      "ig_steps": 2, "attack_ig_steps": 2}}])
def test_bf16_autocast_trains_with_float32_weights(tmp_path: Path, objective: dict) -> None:
    fp32 = train(tiny_config(tmp_path, name="fp32", steps=3, objective=objective), progress=False, db=False)
    seen = []
    real_autocast = torch.autocast

    class Recording(real_autocast):
        def __enter__(self):
            seen.append(self.fast_dtype)
            return super().__enter__()

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train_lib.torch, "autocast", Recording)
        bf16 = train(tiny_config(tmp_path, name="bf16", steps=3, objective=objective, autocast="bf16"),
                     progress=False, db=False)  # fmt: skip
    assert seen == [torch.bfloat16] * 3  # one autocast region per step
    assert all(p.dtype == torch.float32 for p in bf16.model.parameters())
    losses = [r["loss"] for r in bf16.history]
    assert all(math.isfinite(v) for v in losses)
    ref = [r["loss"] for r in fp32.history]
    assert losses != ref  # the objective ran in bfloat16 ...
    assert losses == pytest.approx(ref, rel=0.05)  # ... close to float32
