"""Attributions on batch-norm networks: ``models.eval_norm`` switches only normalisation and dropout layers and
restores every flag; public attribution functions are per-example, never write a buffer and warn once on a
train-mode model; the measured IG degeneration of train-mode ResNet-18 is gone."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from attrobust import _checks, models
from attrobust.attacks.pgd import model_mode
from attrobust.attributions import input_x_gradient, integrated_gradients, saliency
from attrobust.attributions.gradients import affine_split


@pytest.fixture(autouse=True)
def _fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let warn_once warn again inside every test."""
    monkeypatch.setattr(_checks, "_WARNED", set())


def buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every buffer (running statistics, ``num_batches_tracked``)."""
    return {k: v.clone() for k, v in model.named_buffers()}


def same_buffers(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(v, before[k]) for k, v in model.named_buffers())


def flags(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def trained_stats(model: nn.Module, size: int = 8, seed: int = 0) -> nn.Module:
    """Give the running statistics of ``model`` non-trivial values, as training would, and leave it in train mode."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, model.spec["in_channels"], size, size, generator=g))
    return model


def bn_model(name: str, **options: object) -> nn.Module:
    """Registered net ``name`` on 8x8 RGB images, seeded, with trained running statistics, in train mode."""
    torch.manual_seed(0)
    return trained_stats(models.create(name, in_channels=3, input_size=8, **options))


def mixed_net() -> nn.Module:
    """Every kind :func:`eval_norm` handles, plus modules it must leave alone."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.InstanceNorm2d(4, affine=True, track_running_stats=True),
        nn.InstanceNorm2d(4),  # no running statistics: identical in both modes, left alone
        nn.GroupNorm(2, 4),
        nn.ReLU(),
        nn.Dropout2d(0.5),
        nn.Flatten(),
        nn.BatchNorm1d(4 * 8 * 8),
        nn.AlphaDropout(0.2),
        nn.Linear(4 * 8 * 8, 5),
    )


# ---- the context ---------------------------------------------------------------------------------------------


def test_eval_norm_switches_only_norm_and_dropout_and_restores_exact_flags():
    model = mixed_net().train()
    model[1].eval()  # a frozen batch norm must stay frozen, and come back frozen
    model[4].eval()
    before = flags(model)
    with models.eval_norm(model) as switched:
        assert {type(m) for m in switched} == {nn.InstanceNorm2d, nn.Dropout2d, nn.BatchNorm1d, nn.AlphaDropout}
        assert not any(m.training for m in switched)
        assert model.training and model[0].training and model[3].training and model[5].training
        assert not model[4].training
    assert flags(model) == before


def test_eval_norm_restores_flags_on_error_and_nests():
    model = mixed_net().train()
    before = flags(model)
    with pytest.raises(RuntimeError, match="boom"), models.eval_norm(model):
        with models.eval_norm(model) as inner:
            assert inner == []  # already per-example: nothing left to switch
        raise RuntimeError("boom")
    assert flags(model) == before


def test_eval_norm_is_per_example_and_writes_no_buffer():
    model = mixed_net().train()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    before = buffers(model)
    with models.eval_norm(model):
        out = model(x)
        alone = model(x[:1])
    assert same_buffers(model, before)
    torch.testing.assert_close(out[:1], alone, rtol=1e-5, atol=1e-6)
    reference = mixed_net().eval()
    reference.load_state_dict(model.state_dict())
    torch.testing.assert_close(out, reference(x))


def test_eval_norm_touches_nothing_without_such_layers():
    """small_cnn (the MNIST quickstart net) has no batch norm or dropout: the context is a no-op."""
    model = models.create("small_cnn").train()
    before = flags(model)
    with models.eval_norm(model) as switched:
        assert switched == []
        assert flags(model) == before
    assert models.train_mode_layers(model) == []


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_model_mode_restores_every_submodule_flag(mode):
    """The attacks' (and TRADES/MART's) mode switch gives a frozen batch norm back frozen."""
    model = mixed_net().train()
    model[1].eval()
    before = flags(model)
    with model_mode(model, mode):
        assert all(m.training == (mode == "train") for m in model.modules())
    assert flags(model) == before


def test_eval_norm_warns_on_batch_norm_without_running_statistics():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2, track_running_stats=False)).eval()
    with pytest.warns(UserWarning, match="track_running_stats=False"), models.eval_norm(model):
        pass


def test_affine_prefix_fast_path_inside_eval_norm_is_exact():
    """BatchNorm2d counts as affine only in eval mode: inside the context the fast path applies, and is exact."""
    model = bn_model("resnet18").double()
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    y = torch.tensor([1, 7])
    prefix, _ = affine_split(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in prefix)  # train mode: batch norm ends the prefix
    with models.eval_norm(model):
        prefix, _ = affine_split(model)
        assert any(isinstance(m, nn.BatchNorm2d) for m in prefix)
        fast = integrated_gradients(model, x, y, steps=8, affine_prefix=True)
        plain = integrated_gradients(model, x, y, steps=8, affine_prefix=False)
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)


# ---- public functions ----------------------------------------------------------------------------------------


def test_train_mode_resnet18_ig_equals_eval_mode_ig():
    """The measured bug: IG of a train-mode ResNet-18 was about 3x input x gradient (each path point is a batch of
    its own, renormalised by train-mode batch norm, so every point gives nearly the same output) and wrote the
    running statistics. It now equals IG of the eval-mode model, satisfies completeness and writes nothing."""
    model = bn_model("resnet18")
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 4, 9])
    before = buffers(model)
    with pytest.warns(UserWarning, match=r"model\.eval\(\)"):
        ig_train = integrated_gradients(model, x, y, steps=64)
    assert model.training and same_buffers(model, before)
    model.eval()
    ig_eval = integrated_gradients(model, x, y, steps=64)
    torch.testing.assert_close(ig_train, ig_eval, rtol=0, atol=0)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, y[:, None]).squeeze(1)
    torch.testing.assert_close(ig_eval.flatten(1).sum(1), gap, rtol=0.1, atol=0.01)
    ratio = ig_eval.flatten(1).norm(dim=1) / input_x_gradient(model, x, y).flatten(1).norm(dim=1)
    assert float(ratio.max()) < 2.0


def test_public_functions_warn_once_and_only_on_train_mode_layers():
    model = bn_model("wrn", depth=10, width=1, dropout=0.3)
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([1, 2])
    with pytest.warns(UserWarning, match=r"BatchNorm2d, Dropout layers in train mode.*model\.eval\(\)") as record:
        saliency(model, x, y)
        saliency(model, x, y)
    assert sum("train mode" in str(w.message) for w in record) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        saliency(model.eval(), x, y)  # eval mode: no warning
        saliency(models.create("small_cnn").train(), torch.rand(2, 1, 28, 28), y)  # nothing to switch
        with models.eval_norm(model.train()):
            saliency(model, x, y)  # the caller made it explicit


def test_checkpointed_ig_recomputes_per_example_in_the_backward_pass():
    """``checkpoint=True`` recomputes each chunk during the caller's backward pass, after the attribution's block
    has closed: the recomputation must be per example too (same gradients, no buffer written)."""
    grads = {}
    for checkpoint in (False, True):
        model = bn_model("wrn", depth=10, width=1).double()
        x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
        before = buffers(model)
        with models.eval_norm(model):
            ig = integrated_gradients(model, x, torch.tensor([3, 5]), steps=4, create_graph=True, checkpoint=checkpoint)
        ig.abs().sum().backward()
        assert same_buffers(model, before) and model.training
        grads[checkpoint] = [torch.zeros_like(p) if p.grad is None else p.grad for p in model.parameters()]
    for a, b in zip(grads[False], grads[True], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# ---- metrics that compute attributions -----------------------------------------------------------------------


def _metric_calls() -> dict:
    from attrobust import metrics
    from attrobust.metrics import bounds

    x_adv = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(7))
    near = (torch.rand(2, 3, 3, 8, 8, generator=torch.Generator().manual_seed(8)) - 0.5) * 0.02
    return {
        "ris": lambda m, x, y: metrics.ris(m, x, y, "saliency", perturbations=(x + near).clamp(0, 1)),
        "activation_consistency": lambda m, x, y: metrics.activation_consistency(m, x, x_adv),
        "image_gradient_alignment": lambda m, x, y: metrics.image_gradient_alignment(m, x, y),
        "spectral_norm": lambda m, x, y: bounds.attribution_spectral_norm(
            m, x, y, attribution="integrated_gradients", ig_steps=3, iters=3, beta=5.0,
            generator=torch.Generator().manual_seed(0)).xi_max,
    }


@pytest.mark.parametrize("name", ["ris", "activation_consistency", "image_gradient_alignment", "spectral_norm"])
def test_metrics_on_a_train_mode_batch_norm_net_are_per_example_and_write_nothing(name):
    """Stability metrics and bounds evaluate the model per example (that of the eval-mode net) and never write
    its buffers or flags, whatever its mode."""
    model = bn_model("wrn", depth=10, width=1, dropout=0.3)
    x = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(6)) * 0.8 + 0.1
    y = torch.tensor([2, 5, 7])
    call = _metric_calls()[name]
    before, modes = buffers(model), flags(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the train-mode warning of the metric itself
        value = call(model, x, y)
    assert same_buffers(model, before) and flags(model) == modes
    torch.testing.assert_close(value, call(model.eval(), x, y), rtol=1e-4, atol=1e-6, equal_nan=True)
