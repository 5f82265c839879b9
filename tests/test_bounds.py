"""Upper bounds on the attribution deviation (paper 004) against dense Jacobians and attacks."""

import math

import pytest
import torch
from torch import nn

from attrobust.attacks import ifia, pgd_loop, random_point
from attrobust.attributions import saliency
from attrobust.metrics.bounds import (
    attribution_spectral_norm,
    cosine_bound,
    cosine_from_euclidean,
    euclidean_bound,
    linf_bound,
    local_linearity_eta,
    modified_euclidean_bound,
)
from attrobust.models import softplus
from conftest import make_tiny_cnn

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA"))]
IG_STEPS = 6


def _grad(model: nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """d logit_y / d z with graph, for any z (not only [0, 1]): the tests' own oracle, not attrobust's code."""
    if not z.requires_grad:
        z = z.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(model(z).gather(1, y[:, None]).sum(), z, create_graph=True)
    return g


def _ig(model: nn.Module, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Integrated gradients, zero baseline, right Riemann sum with IG_STEPS points."""
    if not z.requires_grad:
        z = z.detach().requires_grad_(True)
    return z * sum(_grad(model, k / IG_STEPS * z, y) for k in range(1, IG_STEPS + 1)) / IG_STEPS


ATTRS = {
    "saliency": _grad,
    "input_x_gradient": lambda m, z, y: z * _grad(m, z, y),
    "integrated_gradients": _ig,
}
TIGHT = {"iters": 1000, "tol": 1e-10}


def _net(seed: int = 0, beta: float = 3.0) -> nn.Module:
    """Tiny softplus CNN on 1x6x6 inputs (d = 36), float64, eval mode."""
    return softplus(make_tiny_cnn(size=6, seed=seed).double(), beta).eval()


def _batch(n: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(n, 1, 6, 6, generator=g, dtype=torch.float64)
    return x, torch.arange(n) % 10


def _dense(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attribution: str) -> list[torch.Tensor]:
    """Dense Jacobians ``J = d g / d x`` (d x d), one per example, by torch.autograd.functional.jacobian."""
    fn = ATTRS[attribution]
    out = []
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda z, i=i: fn(model, z, y[i : i + 1]).flatten(), x[i : i + 1])
        out.append(jac.reshape(x[0].numel(), x[0].numel()))
    return out


def _opts(attribution: str) -> dict:
    return {"attribution": attribution, "ig_steps": IG_STEPS}


# ------------------------------------------------------------------------------------- spectral norm, bounds


@pytest.mark.parametrize("attribution", list(ATTRS))
def test_xi_max_matches_dense_svd(attribution):
    model, (x, y) = _net(), _batch()
    spec = attribution_spectral_norm(model, x, y, generator=torch.Generator().manual_seed(0), **TIGHT,
                                     **_opts(attribution))  # fmt: skip
    jacs = _dense(model, x, y, attribution)
    dense = torch.stack([torch.linalg.svdvals(j)[0] for j in jacs])
    torch.testing.assert_close(spec.xi_max, dense, rtol=1e-4, atol=0)
    assert bool(spec.converged.all()) and spec.iterations < TIGHT["iters"]
    assert spec.v_max.shape == x.shape
    torch.testing.assert_close(spec.v_max.flatten(1).norm(dim=1), torch.ones(3, dtype=torch.float64))
    for i, j in enumerate(jacs):  # v_max is the top right singular vector, up to sign
        v_ref = torch.linalg.svd(j).Vh[0]
        assert abs(float(v_ref @ spec.v_max[i].flatten())) > 1 - 1e-4
    if attribution == "saliency":  # J is the input Hessian of the logit: symmetric
        torch.testing.assert_close(jacs[0], jacs[0].T)
    eps, quick = 0.1, {"iters": 5, "generator": torch.Generator().manual_seed(1)}
    ref = attribution_spectral_norm(model, x, y, **_opts(attribution), **quick).xi_max
    quick["generator"].manual_seed(1)
    torch.testing.assert_close(euclidean_bound(model, x, y, eps, **_opts(attribution), **quick), ref * eps)  # Thm 1
    quick["generator"].manual_seed(1)
    t_inf = euclidean_bound(model, x, y, eps, norm="linf", **_opts(attribution), **quick)
    torch.testing.assert_close(t_inf, ref * eps * 6.0)  # Corollary 1 with p = inf: sqrt(d) = 6
    assert bool((euclidean_bound(model, x, y, 0.0, iters=2, **_opts(attribution)) == 0).all())


def test_power_iteration_reports_non_convergence():
    model, (x, y) = _net(), _batch()
    spec = attribution_spectral_norm(model, x, y, iters=1)
    assert spec.iterations == 1 and not bool(spec.converged.any())
    dense = torch.stack([torch.linalg.svdvals(j)[0] for j in _dense(model, x, y, "saliency")])
    assert bool((spec.xi_max <= dense * (1 + 1e-9)).all())  # ||J v|| never exceeds the top singular value


@pytest.mark.parametrize("attribution", list(ATTRS))
def test_linf_bound_matches_dense_formula(attribution):
    model, (x, y) = _net(seed=1), _batch(seed=1)
    eps = 8 / 255
    dense = torch.stack([eps * (j.T @ j).abs().sum().sqrt() for j in _dense(model, x, y, attribution)])
    for chunk in (None, 1, 7):
        torch.testing.assert_close(linf_bound(model, x, y, eps, chunk=chunk, **_opts(attribution)), dense,
                                   rtol=1e-10, atol=0)  # fmt: skip


def test_linear_model_closed_forms():
    """For f = W x + b: saliency is constant (J = 0) and input x gradient is x * W_y (J = diag(W_y))."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4)).double().eval()
    x, y = _batch(n=4)
    w = model[1].weight.detach()[y]  # (N, 36)
    eps = 0.2
    for fn in (euclidean_bound, linf_bound):
        assert bool((fn(model, x, y, eps) == 0).all())
    mod = modified_euclidean_bound(model, x, y, eps)
    assert bool((mod.bound == 0).all()) and bool((mod.c == 1).all())
    assert bool((local_linearity_eta(model, x, y, torch.rand_like(x)) == 0).all())
    opts = {"attribution": "input_x_gradient"}
    torch.testing.assert_close(euclidean_bound(model, x, y, eps, **TIGHT, **opts), eps * w.abs().max(1).values)
    torch.testing.assert_close(linf_bound(model, x, y, eps, **opts), eps * w.norm(dim=1))  # P = diag(W_y^2)
    torch.testing.assert_close(local_linearity_eta(model, x, y, 0.3 * torch.rand_like(x), **opts),
                               torch.zeros(4, dtype=torch.float64))  # fmt: skip
    mod = modified_euclidean_bound(model, x, y, eps, **TIGHT, **opts)
    torch.testing.assert_close(mod.c, torch.ones(4, dtype=torch.float64))


# ---------------------------------------------------------------------------------- modified bound, eta, cos


@pytest.mark.parametrize("attribution", ["saliency", "integrated_gradients"])
def test_modified_bound_and_eta_match_dense(attribution):
    model, (x, y) = _net(), _batch()
    fn = ATTRS[attribution]
    eps = 0.5
    res = modified_euclidean_bound(model, x, y, eps, generator=torch.Generator().manual_seed(0), **TIGHT,
                                   **_opts(attribution))  # fmt: skip
    jacs = _dense(model, x, y, attribution)
    g = fn(model, x, y).detach()
    for i, j in enumerate(jacs):
        _, s, vh = torch.linalg.svd(j)
        v = vh[0].view(1, 1, 6, 6)
        dev = max(
            float((fn(model, x[i : i + 1] + s_ * eps * v, y[i : i + 1]) - g[i]).detach().norm()) for s_ in (1, -1)
        )
        c = max(1.0, dev / (float(s[0]) * eps))  # Eq. 39
        assert res.c[i].item() == pytest.approx(c, rel=1e-4)
        assert res.bound[i].item() == pytest.approx(c * float(s[0]) * eps, rel=1e-4)
    assert bool((res.c >= 1).all()) and bool((res.bound >= res.euclidean).all())
    assert bool((res.c > 1).any())  # the attribution is not linear on the ball: T_e alone is exceeded along v_max
    torch.testing.assert_close(res.euclidean, res.xi_max * eps)

    delta = 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    eta = local_linearity_eta(model, x, y, delta, **_opts(attribution))
    g_d = fn(model, x + delta, y).detach()
    ref = torch.stack([(g_d[i] - g[i]).flatten() - j @ delta[i].flatten() for i, j in enumerate(jacs)]).norm(dim=1)
    torch.testing.assert_close(eta, ref, rtol=1e-8, atol=1e-15)
    half = local_linearity_eta(model, x, y, delta / 2, **_opts(attribution))
    assert bool(((half / eta - 0.25).abs() < 0.05).all())  # second-order remainder: O(||delta||^2)
    assert bool((local_linearity_eta(model, x, y, torch.zeros_like(x), **_opts(attribution)) == 0).all())


def test_cosine_bound_matches_dense_formula():
    model, (x, y) = _net(), _batch()
    eps = 0.5
    jacs = _dense(model, x, y, "saliency")
    norm_g = saliency(model, x, y).flatten(1).norm(dim=1)
    t_e = eps * torch.stack([torch.linalg.svdvals(j)[0] for j in jacs])
    expected = 1 - torch.sqrt(1 - t_e**2 / norm_g**2)  # Corollary 2, Eq. 10
    got = cosine_bound(model, x, y, eps, generator=torch.Generator().manual_seed(0), **TIGHT)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=0)
    deg = cosine_bound(model, x, y, eps, degrees=True, generator=torch.Generator().manual_seed(0), **TIGHT)
    torch.testing.assert_close(deg, torch.rad2deg(torch.arcsin(t_e / norm_g)), rtol=1e-4, atol=0)  # the tables' unit
    t_inf = eps * torch.stack([(j.T @ j).abs().sum().sqrt() for j in jacs])
    got_inf = cosine_bound(model, x, y, eps, bound="linf")
    ref_inf = torch.where(
        t_inf > norm_g, torch.full_like(t_inf, 2.0), 1 - torch.sqrt((1 - t_inf**2 / norm_g**2).clamp(min=0))
    )
    torch.testing.assert_close(got_inf, ref_inf, rtol=1e-8, atol=1e-12)
    mod = modified_euclidean_bound(model, x, y, eps, iters=5, generator=torch.Generator().manual_seed(0))
    got_mod = cosine_bound(model, x, y, eps, bound="modified", iters=5, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(got_mod, cosine_from_euclidean(mod.bound, norm_g))
    huge = cosine_bound(model, x, y, 1e6, degrees=True)  # T > ||g||: only the trivial bound
    torch.testing.assert_close(huge, torch.full((3,), 180.0, dtype=torch.float64))


def test_cosine_from_euclidean_is_a_tight_geometric_bound():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 10, generator=g, dtype=torch.float64)
    t = a.norm(dim=1) * torch.rand(200, generator=g, dtype=torch.float64)  # radii below ||a||
    bound = cosine_from_euclidean(t, a.norm(dim=1))
    cos_dist = lambda u, v: 1 - torch.nn.functional.cosine_similarity(u, v, dim=1)  # noqa: E731
    for _ in range(20):  # any point of the ball ||b - a|| <= t
        d = torch.randn(200, 10, generator=g, dtype=torch.float64)
        d = d / d.norm(dim=1, keepdim=True) * t[:, None] * torch.rand(200, 1, generator=g, dtype=torch.float64)
        assert bool((cos_dist(a + d, a) <= bound + 1e-12).all())
    # equality at the tangent point: angle arcsin(t / ||a||)
    na = a.norm(dim=1, keepdim=True)
    ortho = torch.randn(200, 10, generator=g, dtype=torch.float64)
    ortho = ortho - (ortho * a).sum(1, keepdim=True) / na**2 * a
    ortho = ortho / ortho.norm(dim=1, keepdim=True)
    s = (t[:, None] / na).clamp(max=1)
    tangent = a / na * (na * (1 - s**2)) + ortho * (na * s * torch.sqrt(1 - s**2))
    torch.testing.assert_close((tangent - a).norm(dim=1), t)
    torch.testing.assert_close(cos_dist(tangent, a), bound)
    assert cosine_from_euclidean(torch.tensor([2.0]), torch.tensor([1.0])).item() == 2.0
    assert cosine_from_euclidean(torch.tensor([1.0]), torch.tensor([1.0])).item() == 1.0
    assert cosine_from_euclidean(torch.tensor([0.0]), torch.tensor([1.0])).item() == 0.0


# ------------------------------------------------------------------------------------------------ attacks


def test_bounds_hold_against_attacks():
    """What is exact: ||J delta|| <= T (Theorems 1, 2) and ||g(x+delta) - g(x)|| <= T + eta(delta)."""
    model, (x, y) = _net(), _batch(n=4)
    eps2, epsinf = 0.5, 0.05
    jacs = _dense(model, x, y, "saliency")
    g0 = saliency(model, x, y).detach()

    def linear_dev(x_adv: torch.Tensor) -> torch.Tensor:
        delta = (x_adv - x).flatten(1)
        return torch.stack([jacs[i] @ delta[i] for i in range(x.shape[0])]).norm(dim=1)

    def true_dev(x_adv: torch.Tensor) -> torch.Tensor:
        return (saliency(model, x_adv, y, create_graph=True) - g0).flatten(1).norm(dim=1)

    t_e = euclidean_bound(model, x, y, eps2, **TIGHT)
    start = random_point(x, eps2, "l2", torch.Generator().manual_seed(0))  # ||J delta|| has no gradient at 0
    lin = pgd_loop(linear_dev, x, eps=eps2, step_size=eps2 / 4, steps=60, norm="l2", x_init=start)
    assert bool((linear_dev(lin) <= t_e * (1 + 1e-9)).all())
    assert bool((linear_dev(lin) >= 0.95 * t_e).all())  # the attack nearly attains the l2 bound: it is tight
    adv = pgd_loop(true_dev, x, eps=eps2, step_size=eps2 / 4, steps=60, norm="l2")
    assert bool(((adv - x).flatten(1).norm(dim=1) <= eps2 * (1 + 1e-9)).all())
    dev = true_dev(adv).detach()
    eta = local_linearity_eta(model, x, y, adv - x)
    assert bool((dev <= t_e + eta + 1e-12).all())
    assert bool((linear_dev(adv) <= t_e * (1 + 1e-9)).all())

    t_inf = linf_bound(model, x, y, epsinf)
    start = random_point(x, epsinf, "linf", torch.Generator().manual_seed(0))
    lin_inf = pgd_loop(linear_dev, x, eps=epsinf, step_size=epsinf / 4, steps=40, x_init=start)
    assert bool((linear_dev(lin_inf) <= t_inf).all())
    res = ifia(model, x, y, k=8, eps=epsinf, step_size=epsinf / 4, steps=10, attribution="saliency")
    for x_adv in (res.x_adv, pgd_loop(true_dev, x, eps=epsinf, step_size=epsinf / 4, steps=40)):
        assert float((x_adv - x).abs().max()) <= epsinf + 1e-12
        eta = local_linearity_eta(model, x, y, x_adv - x)
        assert bool((linear_dev(x_adv) <= t_inf).all())
        assert bool((true_dev(x_adv).detach() <= t_inf + eta + 1e-12).all())
    rand = x + epsinf * torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype))
    assert bool((linear_dev(rand) <= t_inf).all())  # corners of the l_inf ball, where Theorem 2 is an equality case


# ------------------------------------------------------------------------------------------ models, devices


def test_relu_model_needs_beta():
    relu = make_tiny_cnn(size=6).double().eval()
    x, y = _batch()
    for call in (
        lambda: euclidean_bound(relu, x, y, 0.1),
        lambda: linf_bound(relu, x, y, 0.1),
        lambda: modified_euclidean_bound(relu, x, y, 0.1),
        lambda: cosine_bound(relu, x, y, 0.1),
        lambda: local_linearity_eta(relu, x, y, torch.zeros_like(x)),
        lambda: attribution_spectral_norm(relu, x, y),
    ):
        with pytest.raises(ValueError, match="second derivatives"):
            call()
    with_beta = linf_bound(relu, x, y, 0.1, beta=3.0)
    torch.testing.assert_close(with_beta, linf_bound(softplus(relu, 3.0), x, y, 0.1))


@pytest.mark.parametrize("device", DEVICES)
def test_devices_and_dtypes(device):
    model = softplus(make_tiny_cnn(size=6), 3.0).to(device).eval()
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.tensor([1, 2], device=device)
    results = [
        euclidean_bound(model, x, y, 0.1, iters=5),
        linf_bound(model, x, y, 0.1),
        modified_euclidean_bound(model, x, y, 0.1, iters=5).bound,
        cosine_bound(model, x, y, 0.1, iters=5),
        local_linearity_eta(model, x, y, 0.01 * torch.ones_like(x)),
    ]
    for r in results:
        assert r.shape == (2,) and r.device == x.device and r.dtype == torch.float32
        assert bool(torch.isfinite(r).all())


def test_bad_input_errors():
    model, (x, y) = _net(), _batch()
    cases = [
        (lambda: euclidean_bound(model, x, y, -0.1), "eps"),
        (lambda: euclidean_bound(model, x, y, 0.1, norm="l1"), "norm"),
        (lambda: euclidean_bound(model, x, y, 0.1, attribution="cam"), "attribution"),
        (lambda: euclidean_bound(model, x, y, 0.1, iters=0), "iters"),
        (lambda: euclidean_bound(model, x, y, 0.1, tol=-1.0), "tol"),
        (lambda: euclidean_bound(model, x, y, 0.1, output="margin"), "output"),
        (lambda: euclidean_bound(model, x * 3, y, 0.1), r"\[0, 1\]"),
        (lambda: euclidean_bound(model, x[0], y, 0.1), "4 dims"),
        (lambda: euclidean_bound(model, x, y[:2], 0.1), "shape"),
        (lambda: euclidean_bound("net", x, y, 0.1), "nn.Module"),
        (lambda: linf_bound(model, x, y, 0.1, max_features=10), "max_features=10 .* got d=36"),
        (lambda: linf_bound(model, x, y, 0.1, chunk=0), "chunk"),
        (lambda: cosine_bound(model, x, y, 0.1, bound="l1"), "bound"),
        (lambda: local_linearity_eta(model, x, y, torch.zeros(3, 1, 6, 5)), "delta: expected a float tensor"),
        (lambda: local_linearity_eta(model, x, y, torch.full_like(x, math.nan)), "finite"),
        (lambda: cosine_from_euclidean(torch.ones(3), torch.ones(2)), "equal shapes"),
        (lambda: cosine_from_euclidean(-torch.ones(3), torch.ones(3)), "non-negative"),
        (lambda: modified_euclidean_bound(model, x, y, 0.1, beta=-1.0), "beta"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
