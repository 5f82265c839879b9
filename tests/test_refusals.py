"""Inputs that would make a number mean something else are refused: zero-step attacks, non-finite baselines and
fill values, wrong-shape baselines (issue 12, section 4; the training and checkpoint cases are in
test_nonfinite_weights.py)."""

from __future__ import annotations

import pytest
import torch

from attrobust import attacks
from attrobust.attributions import gradient_shap, integrated_gradients, layer_integrated_gradients, smoothgrad
from attrobust.experiments.config import EvalConfig, IFIAEvalConfig, PGDEvalConfig
from attrobust.metrics.faithfulness import deletion, insertion, road

NAN, INF = float("nan"), float("inf")


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(2, 1, 8, 8, generator=g), torch.tensor([1, 3])


# --- zero-step attacks ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [0, -1])
def test_ifia_refuses_zero_steps(tiny_cnn, steps):
    # steps=0 used to return top-k 1.0 for every example (valid=False), which reads as perfect robustness
    x, y = _batch()
    with pytest.raises(ValueError, match=r"steps: expected an integer >= 1, got " + str(steps)):
        attacks.ifia(tiny_cnn, x, y, k=5, eps=0.1, step_size=0.05, steps=steps, beta=5.0, ig_steps=3)


def test_ifia_refuses_a_zero_step_size_with_a_budget(tiny_cnn):
    x, y = _batch()
    with pytest.raises(ValueError, match=r"step_size \(with eps > 0\): expected a finite value > 0, got 0.0"):
        attacks.ifia(tiny_cnn, x, y, k=5, eps=0.1, step_size=0.0, steps=2, beta=5.0, ig_steps=3)
    y = tiny_cnn(x).argmax(1)
    out = attacks.ifia(tiny_cnn, x, y, k=5, eps=0.0, step_size=0.0, steps=1, beta=5.0, ig_steps=3)
    assert bool(out.valid.all()) and bool((out.topk == 1).all())  # no budget: the maps cannot move


def test_targeted_manipulation_refuses_zero_steps(tiny_cnn):
    x, y = _batch()
    with pytest.raises(ValueError, match=r"steps: expected an integer >= 1, got 0"):
        attacks.targeted_manipulation(tiny_cnn, x, y, steps=0, k=5)


def test_evaluation_config_refuses_zero_attack_steps():
    # PGD with 0 steps from a random start measures accuracy under uniform noise, not under attack
    with pytest.raises(ValueError, match=r"pgd.steps: expected a value >= 1, got 0"):
        PGDEvalConfig(steps=0)
    with pytest.raises(ValueError, match=r"pgd.steps: expected a value >= 1, got 0"):
        EvalConfig(pgd={"steps": 0})
    with pytest.raises(ValueError, match=r"ifia.steps: expected a value >= 1, got 0"):
        IFIAEvalConfig(steps=0)


# --- baselines and fill values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_integrated_gradients_refuses_a_non_finite_baseline(tiny_cnn, bad):
    x, y = _batch()
    base = torch.zeros_like(x)
    base[0, 0, 3, 4] = bad
    with pytest.raises(ValueError, match=r"baseline: expected finite values, got 1 NaN/inf entries"):
        integrated_gradients(tiny_cnn, x, y, baseline=base, steps=4)
    with pytest.raises(ValueError, match=r"baseline: expected finite values"):
        integrated_gradients(tiny_cnn, x, y, baseline=torch.tensor(bad), steps=4)  # broadcast scalar


@pytest.mark.parametrize("shape", [(1, 1, 7, 7), (3, 1, 8, 8), (2, 2, 8, 8)])
def test_a_baseline_that_does_not_broadcast_is_a_value_error(tiny_cnn, shape):
    # torch.broadcast_shapes used to raise a bare RuntimeError before the intended message
    x, y = _batch()
    with pytest.raises(ValueError, match=r"baseline: expected a tensor broadcastable to \(2, 1, 8, 8\), got"):
        integrated_gradients(tiny_cnn, x, y, baseline=torch.zeros(shape), steps=4)


def test_layer_ig_and_smoothgrad_refuse_a_non_finite_baseline(tiny_cnn):
    x, y = _batch()
    base = torch.full_like(x, NAN)
    with pytest.raises(ValueError, match=r"baseline: expected finite values"):
        layer_integrated_gradients(tiny_cnn, x, y, layer="2", baseline=base, steps=4)
    with pytest.raises(ValueError, match=r"baseline: expected finite values"):
        layer_integrated_gradients(tiny_cnn, x, y, layer="2", baseline=base, steps=4, path="input")
    with pytest.raises(ValueError, match=r"baseline: expected finite values"):
        smoothgrad(tiny_cnn, x, y, base="integrated_gradients", n=2, clamp=True, baseline=base[:1], steps=3)


def test_gradient_shap_refuses_non_finite_baselines(tiny_cnn):
    x, y = _batch()
    bases = torch.rand(4, 1, 8, 8)
    bases[2, 0, 0, 0] = INF
    with pytest.raises(ValueError, match=r"baselines: expected finite values, got 1 NaN/inf entries"):
        gradient_shap(tiny_cnn, x, y, baselines=bases, n=4)


def test_deletion_insertion_and_road_refuse_non_finite_fills(tiny_cnn):
    x, y = _batch()
    maps = torch.rand(2, 8, 8)
    for fn in (deletion, insertion):
        with pytest.raises(ValueError, match=r"baseline: expected finite values"):
            fn(tiny_cnn, x, y, maps, baseline=torch.full((1, 1, 1, 1), NAN))
        with pytest.raises(ValueError, match=r"baseline: expected a tensor broadcastable to \(2, 1, 8, 8\)"):
            fn(tiny_cnn, x, y, maps, baseline=torch.zeros(3, 1, 8, 8))
    with pytest.raises(ValueError, match=r"value: expected a finite number"):
        road(tiny_cnn, x, y, maps, imputation="constant", value=NAN)


def test_eval_config_refuses_nan_and_noise_only_pgd() -> None:
    """NaN slipped through the `>= minimum` checks (`nan < x` is False); PGD with step 0 measures noise only."""
    from attrobust.experiments.config import EvalConfig

    with pytest.raises(ValueError, match=r"ifia\.eps: expected"):
        EvalConfig(ifia={"eps": float("nan"), "k": 4, "step_size": 0.01})
    with pytest.raises(ValueError, match=r"pgd\.eps: expected"):
        EvalConfig(pgd={"eps": float("inf"), "step_size": 0.01})
    with pytest.raises(ValueError, match=r"pgd\.step_size: expected a value > 0"):
        EvalConfig(pgd={"eps": 0.1, "step_size": 0.0})
    EvalConfig(pgd={"eps": 0.0, "step_size": 0.0})  # no budget, no attack: clean accuracy, stated as eps 0


def test_evaluate_refuses_in_memory_model_with_nonfinite_weights(tiny_cnn: torch.nn.Module) -> None:
    from attrobust.data import ImageDataset
    from attrobust.experiments import EvalConfig, evaluate

    with torch.no_grad():
        tiny_cnn[0].weight[0, 0, 0, 0] = float("nan")
    ds = ImageDataset(torch.rand(4, 1, 8, 8), torch.zeros(4, dtype=torch.int64), classes=[str(i) for i in range(10)])
    cfg = EvalConfig(n=4, pgd={"eps": 0.1, "step_size": 0.01, "steps": 1}, skip_ifia=True)
    with pytest.raises(ValueError, match="model: expected finite weights"):
        evaluate(tiny_cnn, cfg, dataset=ds, progress=False)
