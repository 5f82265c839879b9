"""TRADES, MART and the attributional objectives: formulas, the RAR propositions, IGR's reduction to its base,
SSR's eigenvalue against a dense Hessian, and parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch import nn

from attrobust import objectives
from attrobust.models import softplus
from attrobust.objectives.adversarial import kl_rows
from attrobust.objectives.gradient_alignment import art_triplet, runner_up
from attrobust.objectives.ig_alignment import pearson_loss
from attrobust.objectives.rar import loss_ig
from test_objectives import synthetic_batch, tiny_net


def batch(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    return synthetic_batch(n, seed)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def net() -> nn.Module:
    model = tiny_net()
    x, y = batch(96)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


BUDGET = {"eps": 0.1, "step_size": 0.05, "steps": 2}


# ------------------------------------------------------------------ TRADES and MART


def test_trades_is_clean_ce_plus_beta_kl_at_its_adversarial_example(net: nn.Module) -> None:
    x, y = batch()
    obj = objectives.trades(beta=2.0, **BUDGET)
    loss, logs, x_adv = obj.adversarial(net, x, y, generator=gen())
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    logits, logits_adv = net(x), net(x_adv)
    p, q = F.softmax(logits, 1), F.softmax(logits_adv, 1)
    kl = (p * (p.log() - q.log())).sum(1).mean()
    torch.testing.assert_close(loss, F.cross_entropy(logits, y) + 2.0 * kl)
    assert logs["kl"] >= 0
    zero, _ = objectives.trades(beta=0.0, **BUDGET)(net, x, y, generator=gen())
    torch.testing.assert_close(zero, F.cross_entropy(logits, y))


def test_trades_attack_raises_the_kl_and_restores_train_mode() -> None:
    model = tiny_net().train()
    x, y = batch()
    obj = objectives.trades(beta=1.0, eps=0.2, step_size=0.05, steps=5)
    _, _, x_adv = obj.adversarial(model, x, y, generator=gen())
    assert model.training
    with torch.no_grad():
        log_p = F.log_softmax(model(x), 1)
        start = (x + 0.001 * torch.randn(x.shape, generator=gen())).clamp(0, 1)
        attacked = kl_rows(log_p, F.log_softmax(model(x_adv), 1)).mean()
        assert attacked > kl_rows(log_p, F.log_softmax(model(start), 1)).mean()


def test_mart_matches_its_formula(net: nn.Module) -> None:
    x, y = batch()
    loss, logs, x_adv = objectives.mart(beta=3.0, **BUDGET).adversarial(net, x, y, generator=gen())
    logits, logits_adv = net(x), net(x_adv)
    p, q = F.softmax(logits, 1), F.softmax(logits_adv, 1)
    bce = []
    for i in range(len(y)):
        others = [q[i, k] for k in range(3) if k != int(y[i])]
        bce.append(-torch.log(q[i, y[i]]) - torch.log(1 - torch.stack(others).max()))
    kl = (p * (p.log() - q.log())).sum(1)
    expected = torch.stack(bce).mean() + 3.0 * (kl * (1 - p[torch.arange(len(y)), y])).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert logs["acc"] == pytest.approx(float((logits_adv.argmax(1) == y).float().mean()))


# ------------------------------------------------------------------ RAR: IG-NORM and IG-SUM-NORM


def test_loss_ig_is_complete(net: nn.Module) -> None:
    x, y = batch(4)
    x_adv = (x + 0.05 * torch.randn(x.shape, generator=gen())).clamp(0, 1)
    ig = loss_ig(softplus(net, 10.0), x, x_adv, y, steps=200, rule="middle")
    smooth = softplus(net, 10.0)
    delta = F.cross_entropy(smooth(x_adv), y, reduction="none") - F.cross_entropy(smooth(x), y, reduction="none")
    torch.testing.assert_close(ig.flatten(1).sum(1), delta, rtol=0, atol=1e-4)


def test_rar_proposition_1_sum_size_with_lambda_1_is_the_adversarial_loss(net: nn.Module) -> None:
    x, y = batch()
    obj = objectives.ig_norm(lam=1.0, size="sum", ig_steps=300, attack_ig_steps=5, ig_rule="middle",
                             softplus_beta=10.0, **BUDGET)  # fmt: skip
    loss, _, x_adv = obj.adversarial(net, x, y, generator=gen())
    smooth = softplus(net, 10.0)
    ce_x, ce_adv = F.cross_entropy(net(x), y), F.cross_entropy(smooth(x_adv), y)
    # CE(x) + mean(CE_smooth(x') - CE_smooth(x)) = CE(x') up to the softplus/ReLU gap at x and quadrature error
    expected = ce_x + ce_adv - F.cross_entropy(smooth(x), y)
    torch.testing.assert_close(loss, expected, rtol=0, atol=1e-4)


def test_ig_sum_norm_with_zero_beta_is_pgd_adversarial_training(net: nn.Module) -> None:
    x, y = batch()
    a, _, xa = objectives.ig_sum_norm(beta=0.0, **BUDGET).adversarial(net, x, y, generator=gen(5))
    b, _, xb = objectives.pgd_at(**BUDGET).adversarial(net, x, y, generator=gen(5))
    torch.testing.assert_close(xa, xb)
    torch.testing.assert_close(a, b)


def test_rar_proposition_2_one_step_ig_norm_is_input_gradient_regularisation(net: nn.Module) -> None:
    x, y = batch()
    x = 0.3 + 0.4 * x  # away from the [0, 1] box so the eps ball is not clipped
    eps, lam = 0.05, 0.7
    obj = objectives.ig_norm(lam=lam, ig_steps=1, attack_ig_steps=1, ig_rule="left", eps=eps, step_size=eps, steps=2)
    loss, _, x_adv = obj.adversarial(net, x, y, generator=gen())
    reference, _ = objectives.input_gradient_reg(lam=lam * eps, q=1.0)(net, x, y)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    g = torch.func.grad(lambda v: F.cross_entropy(net(v), y, reduction="sum"))(x)
    moved = (x_adv - x).abs()[g != 0]
    torch.testing.assert_close(moved, torch.full_like(moved, eps))


def test_ig_norm_attack_increases_the_ig_norm(net: nn.Module) -> None:
    x, y = batch()
    obj = objectives.ig_norm(lam=1.0, ig_steps=8, attack_ig_steps=4, eps=0.2, step_size=0.05, steps=4)
    _, logs, _ = obj.adversarial(net, x, y, generator=gen())
    start = torch.Generator().manual_seed(0)
    x_start = (x + (2 * torch.rand(x.shape, generator=start) - 1) * 0.2).clamp(0, 1)
    norm_start = loss_ig(net, x, x_start, y, 8).abs().flatten(1).sum(1).mean()
    assert logs["ig_norm"] > float(norm_start.detach())


# ------------------------------------------------------------------ ART


def test_art_triplet_matches_the_paper_formula(net: nn.Module) -> None:
    x, y = batch(4)
    smooth = softplus(net, 20.0)
    other = runner_up(net(x), y)
    ours = art_triplet(smooth, x, y, other)
    expected = []
    for i in range(4):
        xi = x[i : i + 1]

        def grad_of_class(c: int, xi: torch.Tensor = xi) -> torch.Tensor:
            return torch.func.grad(lambda v: smooth(v)[0, c])(xi).flatten()

        flat = xi.flatten()
        d_y = 1 - grad_of_class(int(y[i])) @ flat / (grad_of_class(int(y[i])).norm() * flat.norm())
        d_o = 1 - grad_of_class(int(other[i])) @ flat / (grad_of_class(int(other[i])).norm() * flat.norm())
        expected.append(torch.log(1 + torch.exp(-(d_o - d_y))))
    torch.testing.assert_close(ours, torch.stack(expected), rtol=1e-5, atol=1e-6)


def test_runner_up_skips_the_label() -> None:
    logits = torch.tensor([[3.0, 2.0, 1.0], [0.0, 5.0, 4.0]])
    assert runner_up(logits, torch.tensor([0, 2])).tolist() == [1, 1]
    with pytest.raises(ValueError, match="at least 2 classes"):
        runner_up(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))


def test_art_inner_attack_raises_the_attribution_loss_and_ce_uses_the_relu_model(net: nn.Module) -> None:
    x, y = batch()
    obj = objectives.art(lam=0.5, beta=10.0, eps=0.2, step_size=0.05, steps=4)
    loss, logs, x_adv = obj.adversarial(net, x, y, generator=gen())
    smooth = softplus(net, 10.0)
    before = art_triplet(smooth, x, y, runner_up(net(x), y)).mean()
    assert logs["attr"] > float(before)
    torch.testing.assert_close(torch.tensor(logs["ce"]), F.cross_entropy(net(x_adv), y).detach())
    torch.testing.assert_close(loss.detach(), torch.tensor(logs["ce"] + 0.5 * logs["attr"]))


# ------------------------------------------------------------------ IGR and AdvAAT


@pytest.mark.parametrize("base", ["pgd_at", "trades", "mart"])
def test_igr_with_zero_lambda_equals_its_base(net: nn.Module, base: str) -> None:
    x, y = batch()
    with_igr, logs, xa = objectives.create(f"{base}+igr", lam=0.0, ig_steps=3, **BUDGET).adversarial(
        net, x, y, generator=gen(2)
    )
    plain, _, xb = objectives.create(base, **BUDGET).adversarial(net, x, y, generator=gen(2))
    torch.testing.assert_close(xa, xb)
    torch.testing.assert_close(with_igr, plain)
    assert 0.0 <= logs["igr"] <= 2.0


def test_igr_regulariser_is_one_minus_cosine_of_ig(net: nn.Module) -> None:
    from attrobust.attributions import integrated_gradients

    x, y = batch()
    loss, logs, x_adv = objectives.igr("pgd_at", lam=2.0, ig_steps=5, **BUDGET).adversarial(net, x, y, generator=gen())
    a = integrated_gradients(net, x, y, steps=5).flatten(1)
    b = integrated_gradients(net, x_adv, y, steps=5).flatten(1)
    expected = (1 - F.cosine_similarity(a, b, dim=1)).mean()
    assert logs["igr"] == pytest.approx(float(expected), abs=1e-6)
    assert float(loss) == pytest.approx(logs["base_loss"] + 2.0 * logs["igr"], abs=1e-5)


def test_igr_passes_the_warmup_to_its_base(net: nn.Module) -> None:
    x, y = batch(4)
    obj = objectives.create("trades+igr", beta=1.0, eps=0.2, step_size=0.05, steps=1, eps_warmup=4)
    obj.set_step(0)
    assert obj(net, x, y, generator=gen())[1]["eps"] == pytest.approx(0.05)


def test_igr_rejects_a_base_without_adversarial_examples_and_unknown_parameters() -> None:
    with pytest.raises(ValueError, match="pgd_at"):
        objectives.create("pgd_at+igr", nope=1)
    with pytest.raises(ValueError, match="unknown objective"):
        objectives.igr("nope")


def test_pearson_loss_matches_scipy() -> None:
    g = gen(3)
    a, b = torch.randn(5, 30, generator=g, dtype=torch.float64), torch.randn(5, 30, generator=g, dtype=torch.float64)
    expected = [(1 - stats.pearsonr(u, v).statistic) / 2 for u, v in zip(a.numpy(), b.numpy(), strict=True)]
    np.testing.assert_allclose(pearson_loss(a, b).numpy(), expected, atol=1e-12)
    torch.testing.assert_close(pearson_loss(a, a), torch.zeros(5, dtype=torch.float64))


def test_adv_aat_with_zero_lambda_is_pgd_adversarial_training(net: nn.Module) -> None:
    x, y = batch()
    a, _, xa = objectives.adv_aat(lam=0.0, ig_steps=2, attack_ig_steps=2, **BUDGET).adversarial(
        net, x, y, generator=gen(1)
    )
    b, _, xb = objectives.pgd_at(**BUDGET).adversarial(net, x, y, generator=gen(1))
    torch.testing.assert_close(xa, xb)
    torch.testing.assert_close(a, b)


# ------------------------------------------------------------------ SSR and input-gradient regularisation


def dense_top_eigenvalue(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    out = []
    for i in range(x.shape[0]):
        def loss(v: torch.Tensor, i: int = i) -> torch.Tensor:
            return F.cross_entropy(model(v.view(1, *x.shape[1:])), y[i : i + 1])

        h = torch.autograd.functional.hessian(loss, x[i].flatten())
        out.append(torch.linalg.eigvalsh(h).max())
    return torch.stack(out)


@pytest.mark.parametrize("beta", [None, 5.0])
def test_ssr_eigenvalue_matches_a_dense_hessian(net: nn.Module, beta: float | None) -> None:
    model = net.double() if beta is None else softplus(net, beta).double()
    x, y = batch(4)
    x = x.double()
    ours = objectives.input_hessian_top_eigenvalue(model, x, y, iters=300, generator=gen(), create_graph=False)
    torch.testing.assert_close(ours, dense_top_eigenvalue(model, x, y), rtol=1e-4, atol=1e-8)
    net.float()


def test_ssr_loss_is_ce_plus_lambda_eigenvalue_and_differentiable(net: nn.Module) -> None:
    x, y = batch(4)
    model = tiny_net(1)
    loss, logs = objectives.ssr(lam=0.5, power_iters=50)(model, x, y, generator=gen())
    assert float(loss) == pytest.approx(logs["ce"] + 0.5 * logs["eigenvalue"], rel=1e-5)
    assert logs["eigenvalue"] >= 0
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_input_gradient_reg_is_double_backprop(net: nn.Module) -> None:
    x, y = batch()
    loss, _ = objectives.input_gradient_reg(lam=3.0, q=2.0)(net, x, y)

    def per_example(v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(net(v[None]), t[None])

    grads = torch.stack([torch.func.grad(per_example)(x[i], y[i]) for i in range(len(y))])
    expected = F.cross_entropy(net(x), y) + 3.0 * grads.pow(2).flatten(1).sum(1).mean()
    torch.testing.assert_close(loss, expected)
    zero, _ = objectives.input_gradient_reg(lam=0.0)(net, x, y)
    torch.testing.assert_close(zero, F.cross_entropy(net(x), y))


# ------------------------------------------------------------------ parameters and warm-up


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("trades", {"beta": -1.0}, "trades beta"),
        ("mart", {"steps": 1.5}, "mart steps"),
        ("ig_norm", {"ig_steps": 0}, "ig_norm ig_steps"),
        ("ig_norm", {"size": "l2"}, "ig_norm size"),
        ("ig_sum_norm", {"ig_rule": "simpson"}, "ig_sum_norm ig_rule"),
        ("art", {"beta": 0.0}, "art beta"),
        ("igr", {"lam": float("nan")}, "igr lam"),
        ("adv_aat", {"softplus_beta": -2.0}, "adv_aat softplus_beta"),
        ("ssr", {"power_iters": 0}, "ssr power_iters"),
        ("input_gradient_reg", {"q": 0.5}, "input_gradient_reg q"),
    ],
)
def test_bad_parameters_are_rejected(name: str, params: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        objectives.create(name, **params)


@pytest.mark.parametrize("name", ["trades", "mart", "ig_norm", "ig_sum_norm", "art", "adv_aat"])
def test_adversarial_objectives_warm_up_and_stay_in_the_ball(net: nn.Module, name: str) -> None:
    x, y = batch(4)
    params = {"eps": 0.2, "step_size": 0.1, "steps": 2, "eps_warmup": 2}
    if name in {"ig_norm", "ig_sum_norm", "adv_aat"}:
        params.update(ig_steps=2, attack_ig_steps=2)
    obj = objectives.create(name, **params)
    obj.set_step(0)
    _, logs, x_adv = obj.adversarial(net, x, y, generator=gen())
    assert logs["eps"] == pytest.approx(0.1)
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("ig_norm", {"ig_steps": 4, "attack_ig_steps": 2, **BUDGET}),
        ("ig_sum_norm", {"ig_steps": 4, "attack_ig_steps": 2, **BUDGET}),
        ("trades+igr", {"ig_steps": 4, "beta": 1.0, **BUDGET}),
        ("adv_aat", {"ig_steps": 4, "attack_ig_steps": 2, **BUDGET}),
    ],
)
def test_ig_checkpoint_gives_the_same_loss_and_gradients(name: str, params: dict) -> None:
    x, y = batch()
    grads = []
    for flag in (False, True):
        model = tiny_net(3).train()
        loss, _ = objectives.create(name, ig_checkpoint=flag, **params)(model, x, y, generator=gen(4))
        loss.backward()
        grads.append((loss.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="ig_checkpoint: expected a bool"):
        objectives.create(name, ig_checkpoint="yes", **params)
