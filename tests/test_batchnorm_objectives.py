"""Every attributional objective on every registered batch-norm net (ResNet-18, WideResNet with dropout, VGG-16)
in train mode: each attribution / curvature term is per example (row 0 does not move when the other rows of its
batch change), no attribution pass writes a buffer, the running statistics are updated by the classification
passes only, IG inside the objectives satisfies completeness, and every flag comes back as it was."""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn

from attrobust import _checks, models
from attrobust.attributions import target_output
from attrobust.objectives import create, curvature, gradient_alignment, ig_alignment, rar
from test_batchnorm import bn_model, buffers, flags, same_buffers

NETS = {
    "resnet18": {},
    "wrn": {"depth": 10, "width": 1, "dropout": 0.3},
    "vgg16": {},
}
BUDGET = {"eps": 0.05, "step_size": 0.02, "steps": 1}
OBJECTIVES = {
    "ig_norm": {**BUDGET, "ig_steps": 2, "attack_ig_steps": 2},
    "ig_sum_norm": {**BUDGET, "ig_steps": 2, "attack_ig_steps": 2},
    "art": {**BUDGET, "beta": 5.0},
    "igr": {**BUDGET, "ig_steps": 2},
    "pgd_at+igr": {**BUDGET, "ig_steps": 2},
    "trades+igr": {**BUDGET, "ig_steps": 2},
    "mart+igr": {**BUDGET, "ig_steps": 2},
    "adv_aat": {**BUDGET, "ig_steps": 2, "attack_ig_steps": 2},
    "ssr": {"power_iters": 1},
    "input_gradient_reg": {},
}
# Train-mode forward passes of the classification losses, i.e. running-statistics updates per call: the objective
# itself, or the one whose classification passes it shares (the attribution passes add none).
UPDATES = {"ig_norm": 1, "art": 1, "ssr": 1, "input_gradient_reg": 1, "ig_sum_norm": "pgd_at", "adv_aat": "pgd_at",
           "igr": "pgd_at", "pgd_at+igr": "pgd_at", "trades+igr": "trades", "mart+igr": "mart"}  # fmt: skip
# The functions through which the objectives compute their attribution and curvature terms.
# Right Riemann sums of ReLU nets converge as 1/steps: at 64 points in float64 the sums here are within 5% of the
# batch's largest |f(x) - f(x0)| (10% of a row's own, on rows where it is ~1e-7). Tolerance: 10% of both.
COMPLETENESS_STEPS, COMPLETENESS_RTOL = 64, 0.1
SPIED = [(rar, "integrated_gradients"), (ig_alignment, "integrated_gradients"), (gradient_alignment, "gradient"),
         (curvature, "gradient"), (curvature, "input_hessian_top_eigenvalue")]  # fmt: skip


def test_every_attributional_objective_is_covered():
    from attrobust.objectives import OBJECTIVES as REGISTRY

    assert set(REGISTRY.names()) - {"natural", "pgd_at", "trades", "mart"} == set(OBJECTIVES)


@functools.cache
def _state(name: str) -> dict[str, torch.Tensor]:
    return bn_model(name, **NETS[name]).state_dict()


def bn_net(name: str, dtype: torch.dtype = torch.float32) -> nn.Module:
    """A registered batch-norm net on 8x8 RGB images, running statistics away from their start, in train mode."""
    model = models.create(name, in_channels=3, input_size=8, **NETS[name])
    model.load_state_dict(_state(name))
    return model.to(dtype).train()


def batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=dtype) * 0.8 + 0.1
    return x, torch.tensor([0, 4, 9])


def _others(t: torch.Tensor) -> torch.Tensor:
    """``t`` with every row but the first replaced by other images in [0, 1]."""
    noise = torch.rand(t.shape, generator=torch.Generator().manual_seed(11), dtype=t.dtype)
    return torch.cat([t[:1], noise[1:]]).detach()


def _copy_generator(kw: dict[str, Any]) -> Callable[[], dict[str, Any]]:
    """A factory of ``kw`` whose generator (if any) restarts from the state it has now."""
    g = kw.get("generator")
    state = g.get_state() if isinstance(g, torch.Generator) else None

    def fresh() -> dict[str, Any]:
        if state is None:
            return dict(kw)
        g2 = torch.Generator()
        g2.set_state(state)
        return {**kw, "generator": g2}

    return fresh


class Spy:
    """Wraps the attribution kernels the objectives use. Around every call it checks that no buffer is written and
    either that row 0 of the result does not change when the other rows of every batch-shaped input change (the
    call is repeated on such a batch, in the model state of the call) or, given ``completeness_steps``, that IG
    with that many points satisfies completeness. Records the calls."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, completeness_steps: int | None = None) -> None:
        self.calls: list[str] = []
        self.completeness_steps = completeness_steps
        for module, name in SPIED:
            monkeypatch.setattr(module, name, self.wrap(getattr(module, name), name))

    def wrap(self, real: Callable[..., torch.Tensor], name: str) -> Callable[..., torch.Tensor]:
        def spied(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
            before, fresh = buffers(model), _copy_generator(kw)
            out = real(model, x, target, *args, **kw)
            assert same_buffers(model, before), f"{name} wrote a buffer"
            if self.completeness_steps is None:
                self.check_independence(functools.partial(real, model), x, target, args, fresh(), out)
            elif name == "integrated_gradients" and kw.get("steps") == self.completeness_steps:
                self.check_completeness(model, x, target, kw, out)
            self.calls.append(name)
            return out

        return spied

    @staticmethod
    def check_independence(call: Callable[..., torch.Tensor], x: torch.Tensor, target: torch.Tensor, args: tuple,
                           kw: dict[str, Any], out: torch.Tensor) -> None:  # fmt: skip
        """Row 0 of ``out = call(x, target, *args, **kw)`` is unchanged when rows 1.. of ``x`` (and of every
        batch-shaped keyword, e.g. an IG baseline) are other images."""
        n = x.shape[0]
        kw2 = {k: _others(v) if isinstance(v, torch.Tensor) and v.dim() == 4 and len(v) == n else v
               for k, v in kw.items()}  # fmt: skip
        out2 = call(_others(x), target, *args, **kw2)
        torch.testing.assert_close(out2[:1].detach(), out[:1].detach(), rtol=1e-4, atol=1e-6)

    def check_completeness(self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, kw: dict[str, Any],
                           ig: torch.Tensor) -> None:  # fmt: skip
        """``sum(IG) = f(x) - f(x0)`` for the IG just computed, with ``f`` evaluated in the same model state."""
        x0 = kw.get("baseline")
        x0 = torch.zeros_like(x) if x0 is None else x0
        output = kw.get("output", "logit")
        with torch.no_grad():
            gap = target_output(model(x), target, output) - target_output(model(x0.expand_as(x)), target, output)
        atol = COMPLETENESS_RTOL * float(gap.abs().max())
        torch.testing.assert_close(ig.detach().flatten(1).sum(1), gap, rtol=COMPLETENESS_RTOL, atol=atol)
        self.calls.append("completeness")


def _run(name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **params: Any) -> tuple[torch.Tensor, dict]:
    objective = create(name, **params)
    return objective(model, x, y, generator=torch.Generator().manual_seed(3))


def _updates(model: nn.Module, name: str, x: torch.Tensor, y: torch.Tensor, **params: Any) -> int:
    """How many times one call of objective ``name`` updated the running statistics."""
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    start = int(bn.num_batches_tracked)
    _run(name, model, x, y, **params)
    return int(bn.num_batches_tracked) - start


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_attribution_terms_are_per_example_and_write_nothing(net, name, monkeypatch):
    monkeypatch.setattr(_checks, "_WARNED", set())
    model = bn_net(net)
    x, y = batch()
    before = flags(model)
    spy = Spy(monkeypatch)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        loss, _ = _run(name, model, x, y, **OBJECTIVES[name])
    assert spy.calls, "the objective computed no attribution through the spied kernels"
    assert not [w for w in record if "train mode" in str(w.message)], "an attribution saw train-mode layers"
    assert torch.isfinite(loss) and flags(model) == before
    expected = UPDATES[name]
    if isinstance(expected, str):
        expected = _updates(bn_net(net), expected, x, y, **BUDGET)
    assert _updates(model, name, x, y, **OBJECTIVES[name]) == expected


# The two IG forms the objectives use: loss_ig (IG of the loss from x to x~: ig_norm, ig_sum_norm) and the
# zero-baseline IG of the true logit (paired_ig: igr and its variants, adv_aat).
IG_OBJECTIVES = ["ig_norm", "igr"]


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("name", IG_OBJECTIVES)
def test_ig_inside_objectives_satisfies_completeness(net, name, monkeypatch):
    """With enough points (64, float64) the outer IG of each objective sums to ``f(x) - f(x0)`` (tolerance: see
    ``COMPLETENESS_RTOL``), ``f`` being the per-example model: train-mode batch norm made IG degenerate."""
    model = bn_net(net, torch.float64)
    x, y = batch(torch.float64)
    x, y = x[:2], y[:2]  # the cost is 64 graph-keeping passes per example
    spy = Spy(monkeypatch, completeness_steps=COMPLETENESS_STEPS)
    _run(name, model, x, y, **{**OBJECTIVES[name], "ig_steps": COMPLETENESS_STEPS})
    assert spy.calls.count("completeness") >= 1


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_objectives_touch_nothing_on_nets_without_norm_layers(name, monkeypatch):
    """small_cnn (the MNIST quickstart net) has no batch norm or dropout: every per-example block of every
    objective switches nothing, so its losses are those of the plain computation (bit-identical to before)."""
    entered: list[list[nn.Module]] = []

    @contextlib.contextmanager
    def recording(model: nn.Module) -> Iterator[list[nn.Module]]:
        with models.eval_norm(model) as switched:
            entered.append(switched)
            yield switched

    for module in (rar, gradient_alignment, ig_alignment, curvature):
        monkeypatch.setattr(module, "eval_norm", recording)
    model = models.create("small_cnn", in_channels=3, input_size=8).train()
    x, y = batch()
    params = {**OBJECTIVES[name], **({"softplus_beta": 5.0} if name == "ssr" else {})}
    _run(name, model, x, y, **params)
    assert entered and all(switched == [] for switched in entered)
