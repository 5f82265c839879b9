"""Every registered attribution and attack through the same contract: shape, finiteness, gradient flow,
untouched model mode and flags; every attribution also through a batch-norm net in train mode (per example, no
buffer written, one warning naming ``model.eval()``). A newly registered method without an entry here fails the
coverage test."""

import pytest
import torch
from torch import nn

from attrobust import _checks
from attrobust.attacks import ATTACKS
from attrobust.attributions import ATTRIBUTIONS
from attrobust.models import softplus


def gap_cnn(seed: int = 0) -> nn.Module:
    """A tiny ReLU CNN with a global-average-pool + linear head (so CAM applies), in eval mode."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    ).eval()


ATTRIBUTION_OPTIONS = {
    "saliency": {},
    "input_x_gradient": {},
    "integrated_gradients": {"steps": 4},
    "ig": {"steps": 4},
    "smoothgrad": {"n": 3, "generator": torch.Generator().manual_seed(0)},
    "gradient_shap": {"n": 3, "generator": torch.Generator().manual_seed(0)},
    "cam": {},
    "grad_cam": {},
    "grad_cam_pp": {},
    "layer_integrated_gradients": {"layer": "3", "steps": 4},
}
LAYER_SHAPED = {"layer_integrated_gradients": (3, 6, 8, 8)}


def _batch():
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 1, 8, 8, generator=g) * 0.8 + 0.1, torch.tensor([0, 2, 4])


def test_every_registered_attribution_has_contract_options():
    assert set(ATTRIBUTIONS.names()) == set(ATTRIBUTION_OPTIONS)


@pytest.mark.parametrize("name", sorted(ATTRIBUTION_OPTIONS))
def test_attribution_contract(name):
    model = gap_cnn()
    x, y = _batch()
    fn = ATTRIBUTIONS.get(name)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    a = fn(model, x, y, **ATTRIBUTION_OPTIONS[name])
    assert tuple(a.shape) == LAYER_SHAPED.get(name, tuple(x.shape))
    assert torch.isfinite(a).all() and not a.requires_grad
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())

    # With create_graph=True the map is differentiable w.r.t. the input and the parameters (smooth model).
    smooth = softplus(gap_cnn().eval(), 5.0)
    xr = x.clone().requires_grad_(True)
    a = fn(smooth, xr, y, create_graph=True, **ATTRIBUTION_OPTIONS[name])
    params = list(smooth.parameters())
    grads = torch.autograd.grad(
        (a * torch.linspace(-1, 1, a.numel()).view_as(a)).sum(), [xr, *params], allow_unused=True
    )
    assert grads[0] is not None and float(grads[0].abs().sum()) > 0
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads[1:])


def gap_bn_cnn(seed: int = 0) -> nn.Module:
    """:func:`gap_cnn` with batch norm (index 3, the layer of layer IG) and dropout, its running statistics
    away from their initial values, in train mode."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1),
        nn.BatchNorm2d(6),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(6, 5),
    )
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(8, 1, 8, 8) * 2)
    return model


def _fresh(options: dict) -> dict:
    """The options with every generator replaced by a freshly seeded one (same draws on every call)."""
    return {k: torch.Generator().manual_seed(0) if isinstance(v, torch.Generator) else v for k, v in options.items()}


@pytest.mark.parametrize("name", sorted(ATTRIBUTION_OPTIONS))
def test_attribution_contract_on_train_mode_batch_norm(name, monkeypatch):
    """On a train-mode BN + dropout net every attribution is that of the eval-mode net, is per example (row 0 does
    not move when rows 1.. change), writes no buffer, leaves every flag, and warns once naming model.eval()."""
    monkeypatch.setattr(_checks, "_WARNED", set())
    model = gap_bn_cnn()
    x, y = _batch()
    fn = ATTRIBUTIONS.get(name)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    with pytest.warns(UserWarning, match=r"model\.eval\(\)"):
        a = fn(model, x, y, **_fresh(ATTRIBUTION_OPTIONS[name]))
    other = torch.rand(x.shape, generator=torch.Generator().manual_seed(9))
    a_mixed = fn(model, torch.cat([x[:1], other[1:]]), y, **_fresh(ATTRIBUTION_OPTIONS[name]))
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == modes
    torch.testing.assert_close(a_mixed[:1], a[:1], rtol=1e-5, atol=1e-7)
    a_eval = fn(model.eval(), x, y, **_fresh(ATTRIBUTION_OPTIONS[name]))
    torch.testing.assert_close(a, a_eval, rtol=1e-5, atol=1e-7)


def _x_adv(result):
    return result if isinstance(result, torch.Tensor) else result.x_adv


ATTACK_CALLS = {
    "pgd": lambda m, x, y: ATTACKS.get("pgd")(m, x, y, eps=0.1, step_size=0.05, steps=2),
    "fgsm": lambda m, x, y: ATTACKS.get("fgsm")(m, x, y, eps=0.1),
    "cw_linf": lambda m, x, y: ATTACKS.get("cw_linf")(m, x, y, eps=0.1, step_size=0.05, steps=2),
    "spsa": lambda m, x, y: ATTACKS.get("spsa")(m, x, y, eps=0.1, steps=2, n_samples=4),
    "transfer": lambda m, x, y: ATTACKS.get("transfer")(gap_cnn(seed=5), m, x, y, eps=0.1, step_size=0.05, steps=2),
    "ifia": lambda m, x, y: ATTACKS.get("ifia")(m, x, y, k=8, eps=0.1, step_size=0.05, steps=2, beta=5.0, ig_steps=3),
    "targeted_manipulation": lambda m, x, y: ATTACKS.get("targeted_manipulation")(m, x, y, steps=2, k=8, eps=0.1),
}


def test_every_registered_attack_has_a_contract_call():
    assert set(ATTACKS.names()) == set(ATTACK_CALLS)


@pytest.mark.parametrize("name", sorted(ATTACK_CALLS))
def test_attack_contract(name):
    model = gap_cnn()
    x, y = _batch()
    with torch.no_grad():
        y = model(x).argmax(1)
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    x_adv = _x_adv(ATTACK_CALLS[name](model, x, y))
    assert x_adv.shape == x.shape and torch.isfinite(x_adv).all()
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
