"""Every IG quadrature rule against Captum's method of the same name, Gauss-Legendre included (Captum's default)."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, LayerIntegratedGradients

from attrobust import objectives
from attrobust.attributions import IG_RULES, ig_alphas, integrated_gradients, layer_integrated_gradients
from attrobust.models import softplus
from conftest import make_tiny_cnn

# Our rule name -> Captum's ``method`` of the same name. Captum's ``riemann_trapezoid`` is not the textbook rule
# that ours is: its weights are 1/m with the ends halved, summing to (m - 1)/m (see the trapezoid test).
CAPTUM_METHOD = {
    "right": "riemann_right",
    "left": "riemann_left",
    "middle": "riemann_middle",
    "trapezoid": "riemann_trapezoid",
    "gausslegendre": "gausslegendre",
}


def test_every_rule_names_its_captum_method() -> None:
    assert set(CAPTUM_METHOD) == set(IG_RULES)


@pytest.mark.parametrize("rule", IG_RULES)
@pytest.mark.parametrize("steps", [2, 7, 20, 50])
def test_each_rule_equals_captums_method(tiny_cnn, tiny_batch, rule, steps) -> None:
    x, y = tiny_batch
    ref = IntegratedGradients(tiny_cnn).attribute(x, target=y, n_steps=steps, method=CAPTUM_METHOD[rule])
    if rule == "trapezoid":  # Captum's weights sum to (m - 1)/m: its map is ours scaled by that factor
        ref = ref * steps / (steps - 1)
    for batch_steps in (None, 3):
        ours = integrated_gradients(tiny_cnn, x, y, steps=steps, rule=rule, batch_steps=batch_steps)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_gausslegendre_with_a_baseline_and_one_point_equals_captum(tiny_cnn, tiny_batch) -> None:
    x, y = tiny_batch
    base = torch.full_like(x, 0.5)
    for steps in (1, 16):
        ours = integrated_gradients(tiny_cnn, x, y, baseline=base, steps=steps, rule="gausslegendre")
        ref = IntegratedGradients(tiny_cnn).attribute(
            x, baselines=base, target=y, n_steps=steps, method="gausslegendre"
        )
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_right_and_gausslegendre_differ_by_more_than_the_tolerance(tiny_cnn, tiny_batch) -> None:
    # why the rule must be stated wherever agreement with Captum is quoted: its default is not our default
    x, y = tiny_batch
    right = integrated_gradients(tiny_cnn, x, y, steps=20)
    gl = IntegratedGradients(tiny_cnn).attribute(x, target=y, n_steps=20)  # Captum's default method
    assert float((right - gl).abs().max()) > 1e-4


def test_gausslegendre_nodes_and_weights() -> None:
    for m in (1, 2, 5, 50):
        alphas, weights = ig_alphas(m, "gausslegendre")
        assert alphas.dtype == weights.dtype == torch.float64 and alphas.shape == weights.shape == (m,)
        assert bool((alphas > 0).all() and (alphas < 1).all() and (alphas.diff() > 0).all())
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-14)
        # exact for polynomials of degree <= 2m - 1 on [0, 1]
        for d in range(2 * m):
            assert float((weights * alphas**d).sum()) == pytest.approx(1.0 / (d + 1), abs=1e-13)


def test_gausslegendre_completeness_beats_the_riemann_rules() -> None:
    model = softplus(make_tiny_cnn(seed=3), beta=5.0).double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([1, 4, 7])
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)

    def error(rule: str, m: int) -> float:
        return float((integrated_gradients(model, x, y, steps=m, rule=rule).flatten(1).sum(1) - gap).abs().max())

    assert error("gausslegendre", 16) < error("gausslegendre", 4)
    assert error("gausslegendre", 16) < min(error(rule, 16) for rule in ("right", "middle", "trapezoid"))


def test_layer_ig_gausslegendre_equals_captum_and_the_input_path_refuses_it(tiny_cnn, tiny_batch) -> None:
    x, y = tiny_batch
    module = tiny_cnn.get_submodule("2")
    ours = layer_integrated_gradients(tiny_cnn, x, y, layer="2", steps=12, rule="gausslegendre")
    ref = LayerIntegratedGradients(tiny_cnn, module).attribute(x, target=y, n_steps=12, method="gausslegendre")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match=r"rule: expected 'right' or 'left' for path='input', got 'gausslegendre'"):
        layer_integrated_gradients(tiny_cnn, x, y, layer="2", steps=4, rule="gausslegendre", path="input")


@pytest.mark.parametrize("name", ["ig_norm", "ig_sum_norm"])
def test_objectives_accept_the_gausslegendre_rule(name: str) -> None:
    model = softplus(make_tiny_cnn(seed=1), beta=5.0)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    obj = objectives.create(name, ig_steps=3, attack_ig_steps=2, ig_rule="gausslegendre", eps=0.1, step_size=0.05,
                            steps=1)  # fmt: skip
    loss, _ = obj(model, x, y, generator=torch.Generator().manual_seed(0))
    assert bool(torch.isfinite(loss))
    with pytest.raises(ValueError, match=f"{name} ig_rule: expected one of .*'gausslegendre', got 'gauss'"):
        objectives.create(name, ig_rule="gauss")
