"""Interoperability: Captum attribution objects measured by attrobust (metrics, the evaluation suite, IFIA's
judge; refused where a double-backward graph is needed), attrobust attributions as Quantus' ``explain_func``, and
``allow_any_range`` for inputs outside [0, 1]."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import attrobust as ar
from attrobust.attributions import explainer, from_captum, is_captum, quantus_explain_func
from attrobust.experiments import suite
from attrobust.experiments.config import EvalConfig

captum_attr = pytest.importorskip("captum.attr")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 64, 4)
    ).eval()


@pytest.fixture()
def batch() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = tiny_model()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def test_captum_objects_and_classes_are_resolved_like_attrobust_methods(batch) -> None:
    model, x, y = batch
    ig = explainer(captum_attr.IntegratedGradients(model), n_steps=16, method="riemann_right")
    assert torch.allclose(ig(model, x, y), ar.integrated_gradients(model, x, y, steps=16), atol=1e-6)
    sal = explainer(captum_attr.Saliency, abs=False)  # a class: built on each call's model
    assert torch.equal(sal(model, x, y), ar.saliency(model, x, y))
    nt = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    assert is_captum(nt) and explainer(nt, nt_samples=2, stdevs=0.01)(model, x, y).shape == x.shape
    assert not is_captum(ar.saliency) and not is_captum(torch.nn.Linear)
    with pytest.raises(ValueError, match="Captum attribution object"):
        from_captum(ar.saliency)


def test_captum_attribution_in_metrics_and_the_evaluation_suite(batch) -> None:
    model, x, y = batch
    g = torch.Generator().manual_seed(0)
    noise = (torch.rand(3, *x.shape, generator=g) - 0.5) * 0.02
    neighbours = (x + noise).clamp(0, 1)
    ris_captum = ar.metrics.ris(model, x, y, explain=captum_attr.Saliency(model), perturbations=neighbours)
    ris_ours = ar.metrics.ris(model, x, y, explain="saliency", perturbations=neighbours)
    assert torch.allclose(ris_captum, ris_ours, equal_nan=True)
    correct = torch.ones(len(y), dtype=torch.bool)

    def suite_gini(method: object) -> dict:
        config = EvalConfig()
        config = dataclasses.replace(config, ifia=dataclasses.replace(config.ifia, attribution=method))
        return suite.run_batch(suite.Batch(model, 0, x, y, correct, config), ["gini"])

    got, want = suite_gini(captum_attr.Saliency(model)), suite_gini("saliency")
    assert got["gini"] == want["gini"]


def test_captum_attribution_judges_ifia_but_cannot_be_attacked(batch) -> None:
    model, x, y = batch
    options = {"k": 10, "eps": 0.1, "step_size": 0.05, "steps": 3, "dissimilarity": "random"}
    judged = ar.ifia(model, x, y, attribution=captum_attr.Saliency(model), generator=torch.Generator().manual_seed(0),
                     **options)  # fmt: skip
    ours = ar.ifia(model, x, y, attribution="saliency", generator=torch.Generator().manual_seed(0), **options)
    assert torch.equal(judged.topk, ours.topk) and torch.equal(judged.kendall, ours.kendall)
    with pytest.raises(ValueError, match="double-backward"):
        ar.ifia(model, x, y, k=10, eps=0.1, step_size=0.05, steps=2, attribution=captum_attr.Saliency(model), beta=10.0)
    fn = from_captum(captum_attr.Saliency(model))
    with pytest.raises(ValueError, match="create_graph"):
        fn(model, x, y, create_graph=True)
    with pytest.raises(ValueError, match="built on"):
        fn(tiny_model(), x, y)  # another model: never explain the wrong network


def test_allow_any_range_relaxes_only_the_range_and_only_inside(batch) -> None:
    model, x, y = batch
    outside = x * 2 - 0.5
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ar.saliency(model, outside, y)
    with ar.allow_any_range():
        a = ar.saliency(model, outside, y)
        with pytest.raises(ValueError, match="finite"):
            ar.saliency(model, outside.masked_fill(outside > 1, float("nan")), y)
    assert a.shape == x.shape
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ar.saliency(model, outside, y)


def test_quantus_explain_func_speaks_numpy(batch) -> None:
    model, x, y = batch
    explain = quantus_explain_func("ig", steps=8)
    a = explain(model=model, inputs=x.numpy(), targets=y.numpy(), device="cpu")
    assert isinstance(a, np.ndarray) and a.dtype == np.float32 and a.shape == x.shape
    assert np.allclose(a, ar.integrated_gradients(model, x, y, steps=8).numpy())
    one = explain(model=model, inputs=x[:2].numpy(), targets=int(y[0]))
    assert np.allclose(one, ar.integrated_gradients(model, x[:2], y[:1].expand(2), steps=8).numpy())
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        explain(model=model, inputs=(x * 3).numpy(), targets=y.numpy())
    assert np.isfinite(quantus_explain_func("ig", any_range=True, steps=8)(model, (x * 3).numpy(), y.numpy())).all()
    with pytest.raises(ValueError, match="attribution"):
        quantus_explain_func("no_such_method")


def test_attrobust_ig_inside_quantus_metrics(batch) -> None:
    quantus = pytest.importorskip("quantus")
    model, x, y = batch
    xs, ys = x.numpy(), y.numpy()
    explain = quantus_explain_func("ig", steps=8)
    sparseness = quantus.Sparseness(disable_warnings=True)
    via_func = sparseness(model=model, x_batch=xs, y_batch=ys, explain_func=explain, device="cpu")
    given = sparseness(model=model, x_batch=xs, y_batch=ys, a_batch=explain(model, xs, ys), device="cpu")
    assert np.allclose(via_func, given)
    sensitivity = quantus.MaxSensitivity(nr_samples=2, lower_bound=0.1, disable_warnings=True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):  # its uniform noise leaves the image range
        sensitivity(model=model, x_batch=xs, y_batch=ys, explain_func=explain, device="cpu")
    relaxed = quantus_explain_func("ig", any_range=True, steps=8)
    scores = np.asarray(sensitivity(model=model, x_batch=xs, y_batch=ys, explain_func=relaxed, device="cpu"))
    assert scores.shape == (len(xs),) and np.isfinite(scores).all()
