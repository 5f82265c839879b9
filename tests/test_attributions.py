import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency
from torch import nn

from attrobust.attributions import (
    ATTRIBUTIONS,
    gradient,
    ig_alphas,
    input_x_gradient,
    integrated_gradients,
    saliency,
)
from attrobust.models import softplus
from conftest import make_tiny_cnn


def test_saliency_equals_captum(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    ours = saliency(tiny_cnn, x, y)
    ref = Saliency(tiny_cnn).attribute(x, target=y, abs=False)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_input_x_gradient_equals_captum(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    torch.testing.assert_close(
        input_x_gradient(tiny_cnn, x, y), InputXGradient(tiny_cnn).attribute(x, target=y), atol=1e-5, rtol=0
    )


@pytest.mark.parametrize("rule", ["right", "left", "middle"])
@pytest.mark.parametrize("batch_steps", [None, 3, 50])
def test_integrated_gradients_equals_captum(tiny_cnn, tiny_batch, rule, batch_steps):
    x, y = tiny_batch
    ours = integrated_gradients(tiny_cnn, x, y, steps=20, rule=rule, batch_steps=batch_steps)
    ref = IntegratedGradients(tiny_cnn).attribute(x, target=y, n_steps=20, method=f"riemann_{rule}")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_integrated_gradients_with_baseline_equals_captum(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    base = torch.full_like(x, 0.5)
    ours = integrated_gradients(tiny_cnn, x, y, baseline=base, steps=16)
    ref = IntegratedGradients(tiny_cnn).attribute(x, baselines=base, target=y, n_steps=16, method="riemann_right")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


class Cubic(nn.Module):
    """f_c(x) = (c + 1) * sum(w * x^3): a model whose IG path integral is known in closed form."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = w

    def forward(self, x):
        s = (self.w * x**3).flatten(1).sum(1)
        return torch.stack([s, 2 * s], dim=1)


def test_trapezoid_is_the_textbook_rule_closed_form():
    torch.manual_seed(0)
    w = torch.randn(1, 1, 3, 3, dtype=torch.float64)
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    y = torch.tensor([0, 1])
    for m in (2, 5, 33):
        h = 1.0 / (m - 1)
        ig = integrated_gradients(Cubic(w), x, y, steps=m, rule="trapezoid")
        # IG = 3 w x^3 * trapezoid(t^2 on [0, 1]) and trapezoid(t^2) = 1/3 + h^2/6 exactly.
        expected = (y.double() + 1).view(-1, 1, 1, 1) * 3 * w * x**3 * (1 / 3 + h**2 / 6)
        torch.testing.assert_close(ig, expected, atol=1e-12, rtol=1e-12)
    alphas, weights = ig_alphas(7, "trapezoid")
    assert float(weights.sum()) == pytest.approx(1.0)
    assert float(alphas[0]) == 0.0 and float(alphas[-1]) == 1.0


@pytest.mark.parametrize("rule", ["right", "left", "middle", "trapezoid"])
def test_completeness_error_shrinks_with_steps(rule):
    model = softplus(make_tiny_cnn(seed=3), beta=5.0).double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([1, 4, 7])
    with torch.no_grad():
        gap = model(x).gather(1, y[:, None]).squeeze(1) - model(torch.zeros_like(x)).gather(1, y[:, None]).squeeze(1)
    errors = [
        (integrated_gradients(model, x, y, steps=m, rule=rule).flatten(1).sum(1) - gap).abs().max().item()
        for m in (4, 16, 64)
    ]
    assert errors[2] < errors[1] < errors[0]
    # First-order rules lose ~1/m, middle and trapezoid ~1/m^2: 16x the steps cuts the error 8x at least.
    assert errors[2] <= errors[0] / 8


def _tiny_softplus_net() -> nn.Module:
    torch.manual_seed(4)
    return nn.Sequential(nn.Flatten(), nn.Linear(9, 5), nn.Softplus(beta=2.0), nn.Linear(5, 3)).double()


@pytest.mark.parametrize("method", ["saliency", "ig"])
def test_create_graph_matches_finite_differences(method):
    model = _tiny_softplus_net()
    fn = ATTRIBUTIONS.get(method)
    opts = {"steps": 8} if method == "ig" else {}
    x = torch.rand(2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(5)) * 0.8 + 0.1
    y = torch.tensor([0, 2])
    v = torch.randn(2, 1, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))

    def scalar(inp: torch.Tensor) -> torch.Tensor:
        return (fn(model, inp, y, create_graph=True, **opts) * v).sum()

    xr = x.clone().requires_grad_(True)
    out = scalar(xr)
    params = list(model.parameters())
    grads = torch.autograd.grad(out, [xr, *params], allow_unused=True)
    h = 1e-6
    # Directional finite difference w.r.t. the input.
    d = torch.randn_like(x)
    fd = ((scalar(x + h * d) - scalar(x - h * d)) / (2 * h)).detach()
    assert float((grads[0] * d).sum()) == pytest.approx(float(fd), rel=1e-5, abs=1e-8)
    # Finite difference w.r.t. one weight entry.
    w = params[0]
    with torch.no_grad():
        w[1, 3] += h
        up = scalar(x).detach()
        w[1, 3] -= 2 * h
        down = scalar(x).detach()
        w[1, 3] += h
    assert float(grads[1][1, 3]) == pytest.approx(float((up - down) / (2 * h)), rel=1e-5, abs=1e-8)


def test_int_target_and_output_kinds(tiny_cnn, tiny_batch):
    x, _ = tiny_batch
    a = saliency(tiny_cnn, x, 3)
    b = saliency(tiny_cnn, x, torch.full((5,), 3))
    torch.testing.assert_close(a, b)
    g_loss = gradient(tiny_cnn, x, torch.full((5,), 3), output="loss")
    g_prob = gradient(tiny_cnn, x, torch.full((5,), 3), output="probability")
    assert g_loss.shape == g_prob.shape == x.shape
    # d CE / dx = -d log p / dx, so the loss gradient and the probability gradient point opposite ways.
    assert float((g_loss * g_prob).flatten(1).sum(1).max()) < 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"x": torch.rand(1, 8, 8)}, "4 dims"),
        ({"x": torch.full((1, 1, 8, 8), float("nan"))}, "finite"),
        ({"x": torch.rand(1, 1, 8, 8) + 1.0}, "[0, 1]"),
        ({"x": torch.rand(0, 1, 8, 8)}, "non-empty"),
        ({"x": torch.randint(0, 2, (1, 1, 8, 8))}, "floating"),
        ({"y": torch.tensor([10])}, "[0, 10)"),
        ({"y": torch.tensor([-1])}, ">= 0"),
        ({"y": torch.tensor([1.0])}, "int64"),
        ({"y": torch.tensor([1, 2])}, "shape (1,)"),
        ({"steps": 0}, "steps"),
        ({"rule": "simpson"}, "rule"),
        ({"rule": "trapezoid", "steps": 1}, ">= 2"),
        ({"baseline": torch.zeros(2, 1, 8, 8)}, "baseline"),
        ({"batch_steps": 0}, "batch_steps"),
        ({"output": "softmax"}, "output"),
    ],
)
def test_bad_input_raises_value_error(tiny_cnn, kwargs, message):
    args = {"x": torch.rand(1, 1, 8, 8), "y": torch.tensor([1])}
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(ValueError, match="expected") as info:
        integrated_gradients(tiny_cnn, args["x"], args["y"], **kwargs)
    assert message in str(info.value)
