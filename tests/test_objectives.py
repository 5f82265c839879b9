"""Objectives: registry, loss/logs contract, gradient flow, PGD-AT properties."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attrobust import data, objectives
from attrobust.objectives import OBJECTIVES

# small, fast hyper-parameters for every registered objective (tiny 8x8 images)
_BUDGET = {"eps": 0.1, "step_size": 0.05, "steps": 2}
FAST_PARAMS: dict[str, dict] = {
    "natural": {},
    "pgd_at": {"eps": 0.1, "step_size": 0.05, "steps": 3},
    "trades": {"beta": 1.0, **_BUDGET},
    "mart": {"beta": 1.0, **_BUDGET},
    "ig_norm": {"ig_steps": 4, "attack_ig_steps": 2, **_BUDGET},
    "ig_sum_norm": {"beta": 0.5, "ig_steps": 4, "attack_ig_steps": 2, **_BUDGET},
    "art": {"eps": 0.1, "step_size": 0.05, "steps": 2, "beta": 5.0},
    "igr": {"base": "pgd_at", "ig_steps": 4, **_BUDGET},
    "pgd_at+igr": {"ig_steps": 4, **_BUDGET},
    "trades+igr": {"ig_steps": 4, "beta": 1.0, **_BUDGET},
    "mart+igr": {"ig_steps": 4, **_BUDGET},
    "adv_aat": {"ig_steps": 4, "attack_ig_steps": 2, **_BUDGET},
    "ssr": {"power_iters": 3},
    "input_gradient_reg": {},
}


def tiny_net(seed: int = 0, num_classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 16, num_classes)
    )  # fmt: skip


def synthetic_batch(n: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ds = data.load("synthetic", "train", n=n, size=8, num_classes=3, seed=seed)
    return ds.images, ds.labels


@pytest.fixture(scope="module")
def trained_net() -> nn.Module:
    """A tiny net fitted to the synthetic data (a few dozen Adam steps)."""
    model = tiny_net()
    x, y = synthetic_batch(96)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_every_registered_objective_has_fast_parameters() -> None:
    assert set(OBJECTIVES.names()) == set(FAST_PARAMS), "add fast parameters for new objectives to FAST_PARAMS"


def test_registry_lists_objectives_and_rejects_unknown() -> None:
    assert {"natural", "pgd_at"} <= set(OBJECTIVES.names())
    with pytest.raises(ValueError, match=r"unknown objective 'nope'.*natural"):
        objectives.create("nope")
    with pytest.raises(ValueError, match="objective 'natural': bad parameters"):
        objectives.create("natural", eps=0.1)


@pytest.mark.parametrize("name", OBJECTIVES.names())
def test_every_objective_gives_finite_loss_logs_and_gradients_to_every_parameter(name: str) -> None:
    model = tiny_net().train()
    x, y = synthetic_batch(8)
    objective = objectives.create(name, **FAST_PARAMS.get(name, {}))
    loss, logs = objective(model, x, y, generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert {"loss", "acc"} <= set(logs) and all(isinstance(v, float) for v in logs.values())
    assert logs["loss"] == pytest.approx(float(loss.detach()))
    assert 0.0 <= logs["acc"] <= 1.0
    assert all(p.grad is None for p in model.parameters()), "the objective must not accumulate parameter grads"
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_natural_is_cross_entropy_and_accuracy() -> None:
    model = tiny_net().eval()
    x, y = synthetic_batch(16)
    loss, logs = objectives.natural()(model, x, y)
    logits = model(x)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y))
    assert logs["acc"] == pytest.approx(float((logits.argmax(1) == y).float().mean()))


def test_pgd_at_loss_is_at_least_natural_loss_on_trained_model(trained_net: nn.Module) -> None:
    x, y = synthetic_batch(32, seed=5)
    nat, nat_logs = objectives.create("natural")(trained_net, x, y)
    adv, adv_logs = objectives.create("pgd_at", eps=0.1, step_size=0.02, steps=10)(
        trained_net, x, y, generator=torch.Generator().manual_seed(0)
    )
    assert float(adv.detach()) >= float(nat.detach())
    assert float(adv.detach()) > 1.05 * float(nat.detach()), (
        "a 10-step attack with eps 0.1 should raise the loss noticeably"
    )
    assert adv_logs["acc"] <= nat_logs["acc"]


def test_pgd_at_with_zero_budget_equals_natural(trained_net: nn.Module) -> None:
    x, y = synthetic_batch(16)
    nat, _ = objectives.natural()(trained_net, x, y)
    adv, _ = objectives.pgd_at(eps=0.0, step_size=0.01, steps=3)(trained_net, x, y)
    torch.testing.assert_close(adv, nat)


def test_pgd_at_random_start_follows_the_generator(trained_net: nn.Module) -> None:
    x, y = synthetic_batch(16)
    obj = objectives.pgd_at(eps=0.2, step_size=0.01, steps=1)
    a, _ = obj(trained_net, x, y, generator=torch.Generator().manual_seed(3))
    b, _ = obj(trained_net, x, y, generator=torch.Generator().manual_seed(3))
    c, _ = obj(trained_net, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    no_start = objectives.pgd_at(eps=0.2, step_size=0.01, steps=1, random_start=False)
    d, _ = no_start(trained_net, x, y, generator=torch.Generator().manual_seed(3))
    e, _ = no_start(trained_net, x, y, generator=torch.Generator().manual_seed(4))
    assert torch.equal(d, e)


def test_pgd_at_eps_warmup_follows_the_step_it_is_given(trained_net: nn.Module) -> None:
    x, y = synthetic_batch(8)
    obj = objectives.pgd_at(eps=0.2, step_size=0.04, steps=2, eps_warmup=4)
    assert obj(trained_net, x, y)[1]["eps"] == pytest.approx(0.2), "outside a trainer the full budget is used"
    seen = []
    for step in (0, 1, 3, 10):
        obj.set_step(step)
        seen.append(obj(trained_net, x, y)[1]["eps"])
    assert seen == pytest.approx([0.05, 0.1, 0.2, 0.2])
    obj.set_step(0)
    ramped, _ = obj(trained_net, x, y, generator=torch.Generator().manual_seed(0))
    same, _ = objectives.pgd_at(eps=0.05, step_size=0.01, steps=2)(
        trained_net, x, y, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(ramped, same)
    plain = objectives.pgd_at(eps=0.2, steps=1)
    plain.set_step(0)
    assert plain(trained_net, x, y)[1]["eps"] == pytest.approx(0.2)


@pytest.mark.parametrize("training", [True, False])
def test_pgd_at_keeps_the_model_mode(training: bool) -> None:
    seen: list[bool] = []
    model = tiny_net().train(training)
    model.register_forward_hook(lambda m, i, o: seen.append(m.training))
    x, y = synthetic_batch(4)
    objectives.pgd_at(eps=0.1, step_size=0.05, steps=2)(model, x, y)
    assert model.training is training
    assert seen and all(s is training for s in seen), "attack and loss run in the trainer's mode (Madry et al.)"


def test_objectives_reject_bad_input_and_parameters() -> None:
    model = tiny_net()
    x, y = synthetic_batch(4)
    for obj in (objectives.natural(), objectives.pgd_at(eps=0.1, step_size=0.05, steps=1)):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            obj(model, x * 3, y)
        with pytest.raises(ValueError, match="expected shape"):
            obj(model, x, y[:2])
        with pytest.raises(ValueError, match="labels in"):
            obj(model, x, torch.full_like(y, 7))
    with pytest.raises(ValueError, match="eps"):
        objectives.pgd_at(eps=-0.1)
    with pytest.raises(ValueError, match="steps"):
        objectives.pgd_at(steps=2.5)
    with pytest.raises(ValueError, match="eps_warmup"):
        objectives.pgd_at(eps_warmup=-1)
    with pytest.raises(ValueError, match="random_start"):
        objectives.pgd_at(random_start="yes")


@pytest.mark.parametrize("name", ["igr", "pgd_at+igr", "trades+igr", "mart+igr"])
def test_an_unknown_parameter_of_a_composite_lists_its_own_and_its_base_parameters(name: str) -> None:
    with pytest.raises(ValueError, match=rf"objective '{re.escape(name)}': bad parameters") as err:
        objectives.create(name, nope=1)
    expected = name.removesuffix("+igr") if "+" in name else "pgd_at"
    listed = str(err.value).split("expected: ")[1].split(", ")
    assert {"lam", "ig_steps", "softplus_beta", "ig_checkpoint"} <= set(listed)
    assert set(objectives.OBJECTIVES.get(expected).parameters()) <= set(listed)


def test_objectives_are_frozen_dataclasses_described_by_their_fields() -> None:
    obj = objectives.create("trades", beta=2, eps=0.1)
    assert dataclasses.is_dataclass(obj) and isinstance(obj, objectives.Objective)
    with pytest.raises(dataclasses.FrozenInstanceError):
        obj.eps = 0.2  # type: ignore[misc]
    assert obj.beta == 2.0 and isinstance(obj.beta, float), "weights are validated into floats"
    assert repr(obj) == obj.describe() == (
        "trades(beta=2.0, start_std=0.001, eps=0.1, step_size=0.01, steps=40, eps_warmup=0)"
    )
    assert obj == objectives.trades(beta=2.0, eps=0.1)
    assert obj.budget == objectives.Budget(0.1, 0.01, 40, 0)
    assert objectives.create("pgd_at").budget.random_start is True
    assert objectives.pgd_at.parameters() == ["random_start", "eps", "step_size", "steps", "eps_warmup"]


@pytest.mark.parametrize(
    ("params", "match"),
    [({"eps": float("nan")}, "eps"), ({"step_size": -1.0}, "step_size"), ({"steps": -1}, "steps"),
     ({"eps_warmup": 1.5}, "eps_warmup"), ({"random_start": 1}, "random_start")],
)  # fmt: skip
def test_the_budget_checks_are_shared_by_every_adversarial_objective(params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=f"attack {match}"):
        objectives.Budget(**{"eps": 0.1, "step_size": 0.01, "steps": 1, **params})
    for name in ("pgd_at", "ig_norm", "ig_sum_norm", "art", "adv_aat", "trades", "mart"):
        if "random_start" in params and name in {"trades", "mart"}:
            continue
        with pytest.raises(ValueError, match=f"{name} {match}"):
            objectives.create(name, **params)


def test_igr_holds_its_base_objective(trained_net: nn.Module) -> None:
    base = objectives.trades(beta=1.0, eps=0.1, step_size=0.05, steps=1)
    built = objectives.igr(base, lam=0.5, ig_steps=2)
    assert built.base is base
    assert built == objectives.create("trades+igr", beta=1.0, eps=0.1, step_size=0.05, steps=1, lam=0.5, ig_steps=2)
    only_igr = r"unknown: beta\); expected: base, lam, ig_steps, softplus_beta, ig_checkpoint$"
    with pytest.raises(ValueError, match=only_igr):
        objectives.igr(base, beta=2.0)
    nested = objectives.igr("igr", lam=0.5)  # the inner igr gets its defaults (base pgd_at), as before
    assert nested.lam == 0.5 and nested.base == objectives.igr() and isinstance(nested.base.base, objectives.PGDAT)
    x, y = synthetic_batch(4)
    a, _ = built(trained_net, x, y, generator=torch.Generator().manual_seed(0))
    b, _ = objectives.create("trades+igr", beta=1.0, eps=0.1, step_size=0.05, steps=1, lam=0.5, ig_steps=2)(
        trained_net, x, y, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(a, b)
