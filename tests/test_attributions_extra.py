"""SmoothGrad, GradientSHAP, CAM / Grad-CAM / Grad-CAM++ and layer IG against Captum and their definitions."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from captum.attr import (
    GradientShap,
    LayerAttribution,
    LayerConductance,
    LayerGradCam,
    LayerIntegratedGradients,
    NoiseTunnel,
    Saliency,
)
from torch import nn

from attrobust.attributions import integrated_gradients, saliency
from attrobust.attributions.cam import cam, grad_cam, grad_cam_pp
from attrobust.attributions.layer import layer_integrated_gradients
from attrobust.attributions.noise import gradient_shap, smoothgrad
from attrobust.models import create, softplus
from conftest import make_tiny_cnn


def make_gap_cnn(seed: int = 0, stride: int = 1) -> nn.Module:
    """conv-relu-conv-relu-GAP-linear on (N, 1, 8, 8): a CAM-compatible net (layer "3" feeds the pool)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, stride=stride),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 10),
    ).eval()


def full_range_batch(n: int = 4, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with min 0 and max 1 in every example, so SmoothGrad's noise std is exactly sigma."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, 8, 8, generator=g)
    x[:, 0, 0, 0], x[:, 0, -1, -1] = 0.0, 1.0
    return x, torch.randint(0, 10, (n,), generator=g)


def captum_saliency(model, x, y):
    return Saliency(model).attribute(x, target=y, abs=False)


# ---- SmoothGrad ---------------------------------------------------------------------------------------------


def test_smoothgrad_equals_definition_with_same_noise(tiny_cnn):
    x, y = full_range_batch()
    x[0, 0, 0, 0] = 0.2  # example 0 has range 0.8: the noise std scales with each example's range
    n, sigma = 7, 0.3
    ours = smoothgrad(tiny_cnn, x, y, n=n, sigma=sigma, generator=torch.Generator().manual_seed(5), batch_samples=3)
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    noise = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(5)) * sigma * span
    ref = torch.stack([captum_saliency(tiny_cnn, x + e, y) for e in noise]).mean(0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_smoothgrad_matches_captum_noise_tunnel_statistically(tiny_cnn):
    x, y = full_range_batch()
    n, sigma = 400, 0.15
    ours = smoothgrad(tiny_cnn, x, y, n=n, sigma=sigma, generator=torch.Generator().manual_seed(0), batch_samples=None)
    torch.manual_seed(123)
    ref = NoiseTunnel(Saliency(tiny_cnn)).attribute(
        x, nt_type="smoothgrad", nt_samples=n, nt_samples_batch_size=100, stdevs=sigma, target=y, abs=False
    )
    noise = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(9)) * sigma
    per_sample_std = torch.stack([captum_saliency(tiny_cnn, x + e, y) for e in noise[:100]]).std(0)
    tol = 5 * per_sample_std * (2 / n) ** 0.5 + 1e-6  # 5 sigma of the difference of two independent means
    assert bool(((ours - ref).abs() <= tol).all())
    assert float((ours - ref).abs().max()) < float((ours - saliency(tiny_cnn, x, y)).abs().max())


def test_smoothgrad_seeded_and_chunking_invariant(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    runs = [
        smoothgrad(tiny_cnn, x, y, n=9, generator=torch.Generator().manual_seed(3), batch_samples=b)
        for b in (None, 2, 9)
    ]
    for r in runs[1:]:
        torch.testing.assert_close(r, runs[0], atol=1e-6, rtol=0)
    other = smoothgrad(tiny_cnn, x, y, n=9, generator=torch.Generator().manual_seed(4))
    assert not torch.allclose(other, runs[0])
    torch.testing.assert_close(smoothgrad(tiny_cnn, x, y, n=3, sigma=0.0), saliency(tiny_cnn, x, y))


def test_smoothgrad_composes_any_base(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        smoothgrad(tiny_cnn, x, y, base="integrated_gradients", n=2, steps=4)
    g = torch.Generator().manual_seed(0)
    ours = smoothgrad(tiny_cnn, x, y, base="integrated_gradients", n=3, clamp=True, generator=g, steps=4)
    noise = torch.randn((3, *x.shape), generator=torch.Generator().manual_seed(0))
    span = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    noisy = (x + 0.15 * span * noise).clamp(0, 1)
    ref = torch.stack([integrated_gradients(tiny_cnn, v, y, steps=4) for v in noisy]).mean(0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    via_callable = smoothgrad(tiny_cnn, x, y, base=saliency, n=2, generator=torch.Generator().manual_seed(1))
    via_name = smoothgrad(tiny_cnn, x, y, base="saliency", n=2, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(via_callable, via_name)
    with pytest.raises(ValueError, match="n: expected"):
        smoothgrad(tiny_cnn, x, y, n=0)


# ---- GradientSHAP -------------------------------------------------------------------------------------------


def shap_terms(model, x, y, baselines, index, alpha, eps):
    """Per-sample GradientSHAP terms (x~ - b) * grad f(b + alpha (x~ - b)), shape (n, N, C, H, W)."""
    out = []
    for i in range(index.shape[0]):
        b, xt = baselines[index[i]], x + eps[i]
        point = b + alpha[i].view(-1, 1, 1, 1) * (xt - b)
        out.append((xt - b) * captum_saliency(model, point, y))
    return torch.stack(out)


def test_gradient_shap_equals_definition_with_same_draws(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    base = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    n, stdev = 6, 0.05
    ours = gradient_shap(
        tiny_cnn, x, y, baselines=base, n=n, stdev=stdev, generator=torch.Generator().manual_seed(2), batch_samples=4
    )
    g = torch.Generator().manual_seed(2)
    index = torch.randint(3, (n, x.shape[0]), generator=g)
    alpha = torch.rand((n, x.shape[0]), generator=g)
    eps = stdev * torch.randn((n, *x.shape), generator=g)
    ref = shap_terms(tiny_cnn, x, y, base, index, alpha, eps).mean(0)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_gradient_shap_matches_captum_statistically(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    base = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(7))
    n = 400
    ours = gradient_shap(
        tiny_cnn, x, y, baselines=base, n=n, generator=torch.Generator().manual_seed(0), batch_samples=None
    )
    torch.manual_seed(11)
    np.random.seed(11)
    ref = GradientShap(tiny_cnn).attribute(x, baselines=base, n_samples=n, stdevs=0.0, target=y)
    g = torch.Generator().manual_seed(5)
    index, alpha = torch.randint(4, (100, x.shape[0]), generator=g), torch.rand((100, x.shape[0]), generator=g)
    std = shap_terms(tiny_cnn, x, y, base, index, alpha, torch.zeros(100, *x.shape)).std(0)
    tol = 5 * std * (2 / n) ** 0.5 + 1e-6
    assert bool(((ours - ref).abs() <= tol).all())


def test_gradient_shap_default_baselines_seeded_and_complete_in_expectation():
    model = softplus(make_tiny_cnn(seed=2), beta=5.0).double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 3, 7])
    a = gradient_shap(model, x, y, generator=torch.Generator().manual_seed(1), n=8)
    b = gradient_shap(model, x, y, generator=torch.Generator().manual_seed(1), n=8)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert a.shape == x.shape and a.dtype == x.dtype
    # one baseline: GradientSHAP is IG with random alphas, so completeness holds in expectation
    zero = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    shap = gradient_shap(
        model, x, y, baselines=zero, n=2000, generator=torch.Generator().manual_seed(3), batch_samples=None
    )
    gap = (model(x) - model(zero)).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(shap.flatten(1).sum(1), gap, atol=0.05 * float(gap.abs().max()) + 1e-3, rtol=0)
    with pytest.raises(ValueError, match="baselines"):
        gradient_shap(model, x, y, baselines=torch.zeros(2, 3, 8, 8, dtype=torch.float64))


# ---- CAM family ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["2", "3", "0"])
def test_grad_cam_equals_captum(tiny_cnn, tiny_batch, layer):
    x, y = tiny_batch
    module = tiny_cnn.get_submodule(layer)
    low = LayerGradCam(tiny_cnn, module).attribute(x, target=y, relu_attributions=True)
    ref = LayerAttribution.interpolate(low, x.shape[2:], "bilinear")
    for spec in (layer, module):
        ours = grad_cam(tiny_cnn, x, y, layer=spec)
        assert ours.shape == x.shape
        torch.testing.assert_close(ours, ref.expand_as(x), atol=1e-5, rtol=0)
    assert not module._forward_hooks


def test_cam_is_relu_free_grad_cam_times_hw_on_gap_nets(tiny_batch):
    x, y = tiny_batch
    model = make_gap_cnn(stride=1)  # layer "3" keeps the 8x8 grid, so upsampling is the identity
    c, gc = cam(model, x, y, layer="3"), grad_cam(model, x, y, layer="3")
    torch.testing.assert_close(gc, F.relu(c) / 64, atol=1e-6, rtol=0)
    assert bool((c < 0).any())  # CAM is signed; Grad-CAM's ReLU is the only difference
    # with a 4x4 grid: same relation before upsampling
    model = make_gap_cnn(stride=2)
    c, gc = cam(model, x, y, layer="3"), grad_cam(model, x, y, layer="3")
    fc = model[6]
    acts = model[:4](x)
    low = torch.einsum("nk,nkhw->nhw", fc.weight[y], acts)
    torch.testing.assert_close(c, F.interpolate(low[:, None], size=(8, 8), mode="bilinear").expand_as(x))
    torch.testing.assert_close(
        gc, F.interpolate(F.relu(low[:, None]) / 16, size=(8, 8), mode="bilinear").expand_as(x), atol=1e-6, rtol=0
    )


def test_cam_on_resnet18_and_rejects_other_heads(tiny_cnn, tiny_batch):
    torch.manual_seed(0)
    model = create("resnet18", in_channels=3, input_size=8).eval()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 4])
    c, gc = cam(model, x, y, layer="layer4"), grad_cam(model, x, y, layer=model.layer4)
    # layer4 is a 1x1 grid here (stride 8), so upsampling is constant and commutes with the ReLU
    torch.testing.assert_close(gc, F.relu(c), atol=1e-5, rtol=1e-5)
    # mean_hw CAM = logit - bias (here the 1x1 map is constant)
    with torch.no_grad():
        expected = (model(x) - model.fc.bias).gather(1, y[:, None]).view(-1, 1, 1, 1)
    torch.testing.assert_close(c, expected.expand_as(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="cam: expected"):
        cam(model, x, y, layer="layer3")
    with pytest.raises(ValueError, match="cam: expected"):
        cam(tiny_cnn, tiny_batch[0], tiny_batch[1], layer="3")
    with pytest.raises(ValueError, match="layer: expected one of"):
        grad_cam(tiny_cnn, tiny_batch[0], tiny_batch[1], layer="nope")
    assert not any(m._forward_hooks for m in model.modules())


def grad_cam_pp_paper(model, x, y, layer_idx):
    """Chattopadhyay et al. eq. (19)-(20) with Y = exp(S), written out literally per example and channel."""
    head, tail = model[: layer_idx + 1], model[layer_idx + 1 :]
    maps = []
    for i in range(x.shape[0]):
        a = head(x[i : i + 1]).detach().requires_grad_(True)
        s = tail(a)[0, y[i]]
        (g,) = torch.autograd.grad(s, a)
        a, g, big_y = a[0].detach(), g[0], torch.exp(s.detach())
        d1, d2, d3 = big_y * g, big_y * g**2, big_y * g**3  # exact derivatives of exp(S) for piecewise-linear tails
        m = torch.zeros(a.shape[1:], dtype=a.dtype)
        for k in range(a.shape[0]):
            denom = 2 * d2[k] + a[k].sum() * d3[k]
            alpha = torch.where(denom != 0, d2[k] / torch.where(denom != 0, denom, 1), 0)
            m = m + (alpha * F.relu(d1[k])).sum() * a[k]
        maps.append(F.relu(m) / big_y)  # remove the exp(S) scale, as documented
    return torch.stack(maps)


@pytest.mark.parametrize("layer_idx", [2, 3])
def test_grad_cam_pp_equals_paper_formula(layer_idx):
    model = make_tiny_cnn(seed=4).double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = torch.tensor([2, 5, 9])
    ours = grad_cam_pp(model, x, y, layer=str(layer_idx))
    ref = F.interpolate(grad_cam_pp_paper(model, x, y, layer_idx)[:, None], size=(8, 8), mode="bilinear")
    torch.testing.assert_close(ours, ref.expand_as(x), atol=1e-10, rtol=1e-8)
    assert float(ours.abs().sum()) > 0


# ---- layer IG -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", ["1", "2", "6"])
def test_layer_integrated_gradients_equals_captum(tiny_cnn, tiny_batch, layer):
    x, y = tiny_batch
    module = tiny_cnn.get_submodule(layer)
    ours = layer_integrated_gradients(tiny_cnn, x, y, layer=layer, steps=16)
    ref = LayerIntegratedGradients(tiny_cnn, module).attribute(x, target=y, n_steps=16, method="riemann_right")
    assert ours.shape == ref.shape == module(tiny_cnn[: int(layer)](x)).shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    base = torch.full_like(x, 0.3)
    ours = layer_integrated_gradients(tiny_cnn, x, y, layer=module, baseline=base, steps=8, rule="left")
    ref = LayerIntegratedGradients(tiny_cnn, module).attribute(
        x, baselines=base, target=y, n_steps=8, method="riemann_left"
    )
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    assert not module._forward_hooks


def test_layer_integrated_gradients_completeness():
    model = softplus(make_tiny_cnn(seed=3), beta=5.0).double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    gap = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    errors = [
        float((layer_integrated_gradients(model, x, y, layer="2", steps=m, rule="trapezoid").flatten(1).sum(1) - gap)
              .abs().max())
        for m in (4, 64)
    ]  # fmt: skip
    assert errors[1] < errors[0] / 10 and errors[1] < 1e-3


# ---- contract: create_graph, purity -------------------------------------------------------------------------

METHODS = {
    "smoothgrad": lambda m, x, y, **kw: smoothgrad(m, x, y, n=3, generator=torch.Generator().manual_seed(0), **kw),
    "gradient_shap": lambda m, x, y, **kw: gradient_shap(
        m, x, y, n=3, generator=torch.Generator().manual_seed(0), **kw
    ),
    "cam": lambda m, x, y, **kw: cam(m, x, y, layer="3", **kw),
    "grad_cam": lambda m, x, y, **kw: grad_cam(m, x, y, layer="2", **kw),
    "grad_cam_pp": lambda m, x, y, **kw: grad_cam_pp(m, x, y, layer="2", **kw),
    "layer_integrated_gradients": lambda m, x, y, **kw: layer_integrated_gradients(m, x, y, layer="2", steps=4, **kw),
    "layer_ig_input_path": lambda m, x, y, **kw: layer_integrated_gradients(
        m, x, y, layer="2", steps=4, path="input", **kw
    ),
}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_create_graph_flows_to_input_and_parameters(name, tiny_batch):
    model = softplus(make_gap_cnn(seed=1, stride=2), beta=5.0)
    x, y = tiny_batch
    flags = [p.requires_grad for p in model.parameters()]
    detached = METHODS[name](model, x, y)
    assert not detached.requires_grad and torch.isfinite(detached).all()
    xg = x.clone().requires_grad_(True)
    a = METHODS[name](model, xg, y, create_graph=True)
    torch.testing.assert_close(a.detach(), detached, atol=1e-5, rtol=1e-4)
    gx, gw = torch.autograd.grad(a.pow(2).sum(), [xg, model[2].weight], allow_unused=True)
    assert gw is not None and float(gw.abs().sum()) > 0
    if name != "cam":  # CAM is linear in the feature maps, which depend on x
        assert gx is not None and float(gx.abs().sum()) > 0
    assert not model.training and flags == [p.requires_grad for p in model.parameters()]
    assert not any(m._forward_hooks for m in model.modules())


def test_default_layer_is_the_last_feature_maps(tiny_batch):
    x, y = tiny_batch
    model = make_gap_cnn(stride=2)
    for fn in (cam, grad_cam, grad_cam_pp):
        torch.testing.assert_close(fn(model, x, y), fn(model, x, y, layer="3"), atol=0, rtol=0)
    torch.manual_seed(0)
    resnet = create("resnet18", in_channels=3, input_size=8).eval()
    x3 = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(cam(resnet, x3, 1), cam(resnet, x3, 1, layer="layer4"), atol=0, rtol=0)
    with pytest.raises(ValueError, match="found none"):
        grad_cam(nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), x, 0)


@pytest.mark.parametrize("layer", ["1", "2", "6"])
def test_layer_ig_input_path_is_rar_b2_and_captum_conductance(tiny_cnn, tiny_batch, layer):
    x, y = tiny_batch
    module = tiny_cnn.get_submodule(layer)
    ours = layer_integrated_gradients(tiny_cnn, x, y, layer=layer, steps=12, rule="left", path="input")
    ref = LayerConductance(tiny_cnn, module).attribute(x, target=y, n_steps=12, method="riemann_trapezoid")
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="rule"):
        layer_integrated_gradients(tiny_cnn, x, y, layer=layer, rule="middle", path="input")


def test_layer_ig_input_path_completeness():
    model = softplus(make_tiny_cnn(seed=3), beta=5.0).double()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = torch.tensor([1, 2, 3])
    gap = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    for rule in ("right", "left"):
        a = layer_integrated_gradients(model, x, y, layer="2", steps=128, rule=rule, path="input")
        assert a.shape == (3, 6, 4, 4)
        torch.testing.assert_close(a.flatten(1).sum(1), gap, atol=2e-2 * float(gap.abs().max()), rtol=0)


def test_explainer_binds_options_and_ig_steps_only_for_integrated_gradients(tiny_cnn, tiny_batch):
    from attrobust.attributions import explainer, get_attribution

    x, y = tiny_batch
    for name in ("ig", "integrated_gradients"):
        fn = explainer(name, ig_steps=3)
        assert torch.equal(fn(tiny_cnn, x, y), integrated_gradients(tiny_cnn, x, y, steps=3))
    five = integrated_gradients(tiny_cnn, x, y, steps=5)
    assert torch.equal(explainer("ig", ig_steps=3, steps=5)(tiny_cnn, x, y), five)  # explicit steps win
    assert explainer("saliency", ig_steps=3) is saliency
    assert explainer("grad_cam") is get_attribution("grad_cam")
    sg = explainer("smoothgrad", ig_steps=3, n=2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(sg(tiny_cnn, x, y), smoothgrad(tiny_cnn, x, y, n=2, generator=torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="unknown attribution"):
        explainer("salency")
    with pytest.raises(ValueError, match="method"):
        explainer(3)


def test_explainer_any_range_and_checked(tiny_cnn, tiny_batch):
    from attrobust.attributions import explainer, gradient

    x, y = tiny_batch
    wide = 2 * x - 0.5  # outside [0, 1] on purpose
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        saliency(tiny_cnn, wide, y)
    assert torch.equal(explainer("saliency", any_range=True)(tiny_cnn, wide, y), gradient(tiny_cnn, wide, y))
    ig = explainer("integrated_gradients", any_range=True, steps=4)
    assert torch.equal(ig(tiny_cnn, x, y), integrated_gradients(tiny_cnn, x, y, steps=4))
    assert ig(tiny_cnn, wide, y).shape == x.shape
    with pytest.raises(ValueError, match="any_range"):
        explainer("grad_cam", any_range=True)
    checked = explainer(lambda m, xx, yy: xx[:1], checked=True)
    with pytest.raises(ValueError, match=r"explain: expected attributions of shape \(5, ...\)"):
        checked(tiny_cnn, x, y)
    with pytest.raises(ValueError, match="finite"):
        explainer(lambda m, xx, yy: xx / 0.0, checked=True)(tiny_cnn, x, y)


def test_explainer_hands_a_generator_to_the_random_methods_only() -> None:
    from attrobust.attributions import explainer, saliency

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    )
    x, y = torch.rand(2, 3, 4, 4), torch.tensor([0, 1])
    assert explainer("saliency", generator=torch.Generator().manual_seed(0)) is saliency
    maps = []
    for global_seed in (1, 2):
        torch.manual_seed(global_seed)
        fn = explainer("smoothgrad", n=4, generator=torch.Generator().manual_seed(0))
        maps.append(fn(model, x, y))
    assert torch.equal(maps[0], maps[1])
    other = explainer("smoothgrad", n=4, generator=torch.Generator().manual_seed(5))(model, x, y)
    assert not torch.equal(other, maps[0])
