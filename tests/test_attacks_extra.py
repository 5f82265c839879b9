"""CW-linf, SPSA and transfer attacks: hand computations, invariants, seeding, effectiveness."""

import pytest
import torch
import torch.nn.functional as F

from attrobust.attacks import pgd
from attrobust.attacks.adversarial import TransferResult, cw_linf, margin_loss, spsa, transfer
from attrobust.data import load
from conftest import make_tiny_cnn


def _accuracy(model, x, y):
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def trained():
    """A tiny undefended CNN trained for a few hundred Adam steps on 8x8 synthetic data, and a test batch."""
    train = load("synthetic", "train", n=512, size=8, noise=0.1, seed=0)
    test = load("synthetic", "test", n=64, size=8, noise=0.1, seed=0)
    model = make_tiny_cnn(seed=0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, 512, (64,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(train.images[idx]), train.labels[idx]).backward()
        opt.step()
    model.eval()
    assert _accuracy(model, test.images, test.labels) > 0.8
    return model, test.images, test.labels


def test_margin_loss_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0], [5.0, 0.0, 1.0]])
    y = torch.tensor([1, 0])
    torch.testing.assert_close(margin_loss(logits, y), torch.tensor([-1.0, -4.0]))
    torch.testing.assert_close(margin_loss(logits, torch.tensor([0, 2])), torch.tensor([2.0, 4.0]))
    torch.testing.assert_close(margin_loss(logits, torch.tensor([0, 2]), kappa=3.0), torch.tensor([2.0, 3.0]))


@pytest.mark.parametrize("kappa", [0.0, 1.0])
def test_cw_linf_one_step_equals_hand_computation(tiny_cnn, tiny_batch, kappa):
    x, y = tiny_batch
    ours = cw_linf(tiny_cnn, x, y, eps=0.05, step_size=0.02, steps=1, kappa=kappa, random_start=False)
    xr = x.clone().requires_grad_(True)
    z = tiny_cnn(xr)
    z_y = z[torch.arange(len(y)), y]
    z_other = z.clone()
    z_other[torch.arange(len(y)), y] = -1e9
    loss = torch.minimum(z_other.max(1).values - z_y, torch.tensor(kappa)).sum()
    (g,) = torch.autograd.grad(loss, xr)
    expected = (x + 0.02 * g.sign()).clamp(x - 0.05, x + 0.05).clamp(0, 1)
    torch.testing.assert_close(ours, expected, atol=1e-7, rtol=0)


def test_cw_linf_invariants_seeding_and_margin_increase(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    kw = {"eps": 0.1, "step_size": 0.02, "steps": 10, "kappa": float("inf")}
    a = cw_linf(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    b = cw_linf(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert float((a - x).abs().max()) <= 0.1 + 1e-6 and 0 <= float(a.min()) <= float(a.max()) <= 1
    c = cw_linf(tiny_cnn, x, y, random_start=False, **kw)
    with torch.no_grad():
        before, after = margin_loss(tiny_cnn(x), y), margin_loss(tiny_cnn(c), y)
    assert bool((after >= before).all()) and float(after.mean()) > float(before.mean())


def test_cw_linf_restores_mode_and_rejects_bad_kappa(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    tiny_cnn.train()
    cw_linf(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=1)
    assert tiny_cnn.training
    with pytest.raises(ValueError, match="kappa: expected a value >= 0, got -1"):
        cw_linf(tiny_cnn, x, y, eps=0.1, step_size=0.02, steps=1, kappa=-1.0)


def test_spsa_lowers_accuracy_of_an_undefended_model(trained):
    model, x, y = trained
    eps = 0.15
    x_adv = spsa(
        model, x, y, eps=eps, step_size=0.02, steps=20, n_samples=32, generator=torch.Generator().manual_seed(0)
    )
    assert float((x_adv - x).abs().max()) <= eps + 1e-6 and 0 <= float(x_adv.min()) <= float(x_adv.max()) <= 1
    clean, adv = _accuracy(model, x, y), _accuracy(model, x_adv, y)
    assert adv < clean - 0.3, (clean, adv)
    with torch.no_grad():
        assert float(margin_loss(model(x_adv), y).mean()) > float(margin_loss(model(x), y).mean())


def test_spsa_is_seeded_and_batched(tiny_cnn, tiny_batch):
    x, y = tiny_batch
    kw = {"eps": 0.1, "steps": 3, "n_samples": 4}
    a = spsa(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    b = spsa(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    calls = []
    handle = tiny_cnn.register_forward_pre_hook(lambda m, inp: calls.append(inp[0].shape[0]))
    spsa(tiny_cnn, x, y, generator=torch.Generator().manual_seed(0), **kw)
    handle.remove()
    assert calls == [len(y) * 2 * 4] * 3  # one forward pass per step over all examples and samples
    with pytest.raises(ValueError, match="n_samples: expected an integer >= 1, got 0"):
        spsa(tiny_cnn, x, y, eps=0.1, n_samples=0)


def test_transfer_crafts_on_source_and_judges_on_target(trained):
    source, x, y = trained
    target = make_tiny_cnn(seed=1)
    kw = {"eps": 0.1, "step_size": 0.02, "steps": 5}
    res = transfer(source, target, x, y, generator=torch.Generator().manual_seed(0), **kw)
    assert isinstance(res, TransferResult) and len(res) == len(y)
    torch.testing.assert_close(res.x_adv, pgd(source, x, y, generator=torch.Generator().manual_seed(0), **kw))
    with torch.no_grad():
        assert torch.equal(res.source_correct, source(res.x_adv).argmax(1) == y)
        assert torch.equal(res.target_correct, target(res.x_adv).argmax(1) == y)
    assert res.source_accuracy == float(res.source_correct.float().mean())
    assert res.source_accuracy < _accuracy(source, x, y)
    by_fn = transfer(source, target, x, y, attack=cw_linf, random_start=False, **kw)
    torch.testing.assert_close(by_fn.x_adv, cw_linf(source, x, y, random_start=False, **kw))
    with pytest.raises(ValueError, match="attack: expected one of 'pgd', 'fgsm', 'cw_linf', 'spsa', got 'ifia'"):
        transfer(source, target, x, y, attack="ifia", **kw)


def test_best_keeps_the_lowest_allowed_score_and_its_values():
    from attrobust.attacks.selection import Best

    none = torch.full((3,), -1, dtype=torch.int64)
    best = Best.start(3, torch.device("cpu"), x=torch.zeros(3, 2), step=none)
    changed = best.update(torch.tensor([0.5, 0.2, 0.9]), torch.tensor([True, False, True]), x=torch.ones(3, 2), step=1)
    assert changed.tolist() == [True, False, True]
    allowed = torch.tensor([True, True, True])
    changed = best.update(torch.tensor([0.7, 0.1, 0.3]), allowed, x=2 * torch.ones(3, 2), step=2)
    assert changed.tolist() == [False, True, True]  # a higher score (0.7 > 0.5) never replaces the kept one
    assert best.score.tolist() == pytest.approx([0.5, 0.1, 0.3])
    assert best["step"].tolist() == [1, 2, 2]
    assert best["x"][:, 0].tolist() == [1.0, 2.0, 2.0]
