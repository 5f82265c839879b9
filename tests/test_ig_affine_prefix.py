"""IG with the model's leading affine layers evaluated once per image: same values and gradients as per point."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from attrobust.attributions import integrated_gradients
from attrobust.attributions.gradients import affine_split
from attrobust.models import MODELS, Normalize, create, softplus

_SMALL = {"resnet18": {}, "wrn": {"depth": 10, "width": 1}, "vgg16": {}}


def _model(name: str) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    if name in _SMALL:
        model = create(name, in_channels=3, input_size=32, **_SMALL[name])
        x = torch.rand(3, 3, 32, 32, dtype=torch.float64)
    else:
        model = create(name)
        x = torch.rand(3, 1, 28, 28, dtype=torch.float64)
    return model.eval().double(), x


def _ig_and_grads(model: nn.Module, x: torch.Tensor, affine: bool, **kw: object) -> list[torch.Tensor]:
    xr = x.clone().requires_grad_(True)
    y = torch.tensor([0, 1, 2])
    ig = integrated_gradients(model, xr, y, steps=6, create_graph=True, affine_prefix=affine, **kw)
    params = [p for p in model.parameters() if p.requires_grad]
    grads = torch.autograd.grad((ig**2).sum(), [xr, *params], allow_unused=True)
    return [ig.detach()] + [torch.zeros_like(p) if g is None else g for g, p in zip(grads, [xr, *params], strict=True)]


@pytest.mark.parametrize("name", MODELS.names())
def test_every_registered_model_gets_the_same_values_and_gradients(name: str) -> None:
    model, x = _model(name)
    assert affine_split(model) is not None  # every registered net starts with Normalize and a convolution
    y = torch.tensor([0, 1, 2])
    torch.testing.assert_close(
        integrated_gradients(model, x, y, steps=8), integrated_gradients(model, x, y, steps=8, affine_prefix=False),
        rtol=0, atol=1e-12,
    )  # fmt: skip
    smooth = softplus(model, 10.0)  # second derivatives that do not vanish
    for a, b in zip(_ig_and_grads(smooth, x, True), _ig_and_grads(smooth, x, False), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "kw", [{"batch_steps": 4}, {"checkpoint": True}, {"rule": "trapezoid"}, {"rule": "gausslegendre"}]
)
def test_options_and_a_broadcast_baseline_agree(kw: dict) -> None:
    model, x = _model("small_cnn")
    model = softplus(model, 5.0)
    base = torch.rand(1, 1, 28, 28, dtype=torch.float64)
    for a, b in zip(
        _ig_and_grads(model, x, True, baseline=base, **kw), _ig_and_grads(model, x, False, baseline=base, **kw),
        strict=True,
    ):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_the_prefix_is_the_leading_affine_run() -> None:
    model = create("mnist_cnn").eval()
    prefix, rest = affine_split(model)
    assert [type(m) for m in prefix] == [Normalize, nn.Conv2d]
    assert isinstance(rest[0], nn.ReLU)
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(rest(prefix(x)), model(x))
    resnet = create("resnet18", in_channels=3, input_size=32).eval()
    assert [type(m) for m in affine_split(resnet)[0]] == [Normalize, nn.Conv2d, nn.BatchNorm2d]
    resnet.train()  # batch statistics mix examples: BatchNorm is no longer affine per example
    assert [type(m) for m in affine_split(resnet)[0]] == [Normalize, nn.Conv2d]


def test_models_it_cannot_split_take_the_plain_path() -> None:
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = create("mnist_cnn")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x) * 2

    no_linear = nn.Sequential(Normalize([0.0], [1.0]), nn.ReLU(), nn.Flatten(), nn.Linear(784, 10))
    assert affine_split(Wrapped().eval()) is None
    assert affine_split(no_linear) is None  # only Normalize before the first non-linearity: nothing to save
    assert affine_split(nn.Sequential(nn.Linear(3, 3))) is None  # the rest would be empty


def test_hooks_in_the_prefix_still_fire_once_per_path_point() -> None:
    model = create("mnist_cnn").eval()
    calls = []
    handle = model.features[0].register_forward_hook(lambda *_: calls.append(1))
    try:
        assert affine_split(model) is None
        integrated_gradients(model, torch.rand(2, 1, 28, 28), 0, steps=5)
        assert len(calls) == 5
    finally:
        handle.remove()
    assert affine_split(model) is not None
    handle = model.register_forward_hook(lambda *_: calls.append(1))  # on the whole model
    try:
        assert affine_split(model) is None
    finally:
        handle.remove()


def test_affine_prefix_flag_is_checked(tiny_cnn: nn.Module) -> None:
    with pytest.raises(ValueError, match="affine_prefix: expected a bool or None"):
        integrated_gradients(tiny_cnn, torch.rand(1, 1, 8, 8), 0, affine_prefix=1)


def test_default_skips_the_prefix_only_when_checkpointing_a_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    from attrobust.attributions import gradients

    calls = []
    real = gradients.affine_split
    monkeypatch.setattr(gradients, "affine_split", lambda m: calls.append(1) or real(m))
    model, x = _model("mnist_cnn")
    for kw, expected in (({}, 1), ({"create_graph": True}, 1), ({"checkpoint": True}, 1),
                         ({"create_graph": True, "checkpoint": True}, 0)):  # fmt: skip
        calls.clear()
        integrated_gradients(model, x, 0, steps=3, **kw)
        assert len(calls) == expected, kw


def test_subclassed_and_parametrized_layers_are_not_taken_for_affine() -> None:
    class Squared(nn.Conv2d):  # same type family, different computation
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x) ** 2

    torch.manual_seed(0)
    net = nn.Sequential(Squared(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).eval().double()
    assert affine_split(net) is None
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(integrated_gradients(net, x, 0, steps=4),
                               integrated_gradients(net, x, 0, steps=4, affine_prefix=False))  # fmt: skip
    plain = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))
    assert affine_split(plain) is not None
    torch.nn.utils.parametrizations.weight_norm(plain[0])
    assert affine_split(plain) is None
