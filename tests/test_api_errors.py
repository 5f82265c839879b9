"""Careless calls of the Python API end in one ``ValueError``/``TypeError`` naming the argument, what was expected
and what was given (never a raw torch traceback), and SmoothGrad passes per-example options to its base."""

import pytest
import torch
from torch import nn

import attrobust as ar
from attrobust import _checks
from attrobust.attacks import pgd, spsa
from attrobust.attributions import integrated_gradients, saliency, smoothgrad
from attrobust.metrics import kendall_tau


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    return ar.models.create("small_cnn", 10).eval()


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(3, 1, 28, 28, generator=g) * 0.8 + 0.1, torch.tensor([1, 2, 3])


def test_float64_images_into_a_float32_model(net, batch):
    x, y = batch
    for call in (
        lambda: saliency(net, x.double(), y),
        lambda: integrated_gradients(net, x.double(), y, steps=2),
        lambda: pgd(net, x.double(), y, eps=0.1, step_size=0.1, steps=1),
    ):
        with pytest.raises(ValueError, match=r"x: expected dtype torch.float32 .* got torch.float64"):
            call()


def test_an_image_size_the_model_was_not_built_for(net, batch):
    _, y = batch
    big = torch.rand(3, 1, 32, 32)
    for call in (
        lambda: saliency(net, big, y),
        lambda: integrated_gradients(net, big, y, steps=2),
        lambda: pgd(net, big, y, eps=0.1, step_size=0.1, steps=1),
        lambda: spsa(net, big, y, eps=0.1, steps=1, n_samples=2),
    ):
        with pytest.raises(ValueError, match=r"x: expected images \(N, 1, 28, 28\).*got shape \(3, 1, 32, 32\)"):
            call()


def test_a_model_without_a_spec_still_names_the_shape(batch):
    plain = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    with pytest.raises(ValueError, match=r"x: expected an input the model accepts, got shape \(3, 1, 32, 32\)"):
        saliency(plain, torch.rand(3, 1, 32, 32), batch[1])


def test_meta_device_tensors(net, batch):
    x, y = batch
    meta = x.to("meta")
    for call in (
        lambda: saliency(net, meta, y),
        lambda: integrated_gradients(net, meta, y, steps=2),
        lambda: kendall_tau(meta.flatten(1), meta.flatten(1)),
    ):
        with pytest.raises(ValueError, match=r"expected a tensor with data .* got a tensor on the meta device"):
            call()


class _Scores(nn.Module):
    """A "classifier" returning one number per example, ``(N,)``, instead of logits ``(N, K)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1).sum(1)


def test_a_model_returning_one_number_per_example(batch):
    x, y = batch
    for call in (
        lambda: saliency(_Scores(), x, y),
        lambda: integrated_gradients(_Scores(), x, y, steps=2),
        lambda: pgd(_Scores(), x, y, eps=0.1, step_size=0.1, steps=1),
    ):
        with pytest.raises(ValueError, match=r"model output: expected logits of shape \(3, K\), got \(3,\)"):
            call()


def test_a_seed_instead_of_a_generator(net, batch):
    x, y = batch
    with pytest.raises(TypeError, match=r"generator: expected a torch\.Generator or None.*got int 123"):
        pgd(net, x, y, eps=0.1, step_size=0.1, steps=1, generator=123)
    with pytest.raises(TypeError, match=r"generator: expected a torch\.Generator"):
        smoothgrad(net, x, y, n=2, generator=7)


def test_an_unknown_dataset_option():
    with pytest.raises(ValueError, match=r"dataset 'mnist': unknown option\(s\) foo; expected one of"):
        ar.data.load("mnist", "test", foo=1)
    with pytest.raises(ValueError, match=r"unknown option\(s\) bar; expected one of: .*\bn\b"):
        ar.data.load("synthetic", "test", bar=2)


def test_smoothgrad_repeats_a_per_example_ig_baseline_for_its_noisy_copies(net, batch):
    """SmoothGrad of IG with one baseline per example equals the mean, computed by a loop over the noisy copies
    (same noise draws), of IG of each copy against its own example's baseline."""
    x, y = batch
    baseline = torch.rand(x.shape, generator=torch.Generator().manual_seed(3))
    n, sigma = 4, 0.1
    got = smoothgrad(
        net, x, y, base="integrated_gradients", baseline=baseline, steps=3, n=n, sigma=sigma, clamp=True,
        batch_samples=3, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    noise = torch.randn((n, *x.shape), generator=torch.Generator().manual_seed(0))
    span = x.flatten(1).amax(1) - x.flatten(1).amin(1)
    want = torch.zeros_like(x)
    for i in range(n):
        for j in range(x.shape[0]):
            noisy = (x[j : j + 1] + noise[i, j : j + 1] * (sigma * span[j])).clamp(0, 1)
            want[j] += integrated_gradients(net, noisy, y[j : j + 1], baseline=baseline[j : j + 1], steps=3)[0] / n
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


class _Softmaxed(nn.Module):
    """A classifier ending in a softmax: it returns probabilities, not logits."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).softmax(1)


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x, y: saliency(m, x, y),
        lambda m, x, y: integrated_gradients(m, x, y, steps=2),
        lambda m, x, y: pgd(m, x, y, eps=0.1, step_size=0.1, steps=1),
        lambda m, x, y: ar.metrics.accuracy(m(x), y),
    ],
    ids=["saliency", "integrated_gradients", "pgd", "accuracy"],
)
def test_probabilities_get_the_same_warning_everywhere(call, batch, monkeypatch):
    monkeypatch.setattr(_checks, "_WARNED", set())
    x, y = batch
    with pytest.warns(UserWarning) as record:
        call(_Softmaxed(), x, y)
    assert [str(w.message) for w in record if "probabilities" in str(w.message)] == [_checks.PROBABILITIES_WARNING]


def test_evaluate_warns_about_probabilities(monkeypatch):
    """The evaluation's own forward pass (natural accuracy, no attack configured) gives the same warning."""
    from attrobust.experiments.config import EvalConfig, from_dict
    from attrobust.experiments.evaluate import evaluate

    monkeypatch.setattr(_checks, "_WARNED", set())
    ds = ar.data.load("synthetic", "test", n=6, size=28, num_classes=10)
    cfg = from_dict(EvalConfig, {"n": None, "batch_size": 6, "skip_pgd": True, "skip_ifia": True})
    with pytest.warns(UserWarning, match="look like probabilities"):
        evaluate(_Softmaxed(), cfg, dataset=ds, progress=False, db=False)


class _Broken(nn.Module):
    """A model with a bug of its own (not an input mismatch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("one of the variables needed for gradient computation: expected version 0 instead")


def test_a_bug_inside_the_model_is_not_disguised_as_a_bad_input(batch):
    x, y = batch
    for call in (lambda: saliency(_Broken(), x, y), lambda: pgd(_Broken(), x, y, eps=0.1, step_size=0.1, steps=1)):
        with pytest.raises(RuntimeError, match="expected version 0"):
            call()
