"""IFIA on a real (quickly trained) MNIST model: the attack must actually move the attributions."""

import pytest
import torch
import torch.nn.functional as F

from attrobust.attacks import ifia
from attrobust.data import load
from attrobust.models import create


@pytest.fixture(scope="module")
def mnist_model():
    train = load("mnist", "train").subset(torch.arange(6000))
    torch.manual_seed(0)
    model = create("small_cnn")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for x, y in train.batches(100, shuffle=True, seed=0):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def test_ifia_lowers_topk_intersection_on_trained_mnist(mnist_model):
    test = load("mnist", "test")
    x, y = test.images[:40], test.labels[:40]
    with torch.no_grad():
        correct = mnist_model(x).argmax(1) == y
    assert correct.float().mean() > 0.8  # the model really learned something
    x, y = x[correct][:12], y[correct][:12]
    res = ifia(mnist_model, x, y, k=100, eps=0.3, step_size=0.05, steps=10, beta=10.0, ig_steps=8)
    assert res.valid.float().mean() >= 0.5
    assert float(res.topk[res.valid].mean()) < 0.8
    assert float(res.kendall[res.valid].mean()) < 0.8
    with torch.no_grad():
        assert (mnist_model(res.x_adv).argmax(1) == y).all()
    assert ((res.x_adv - x).abs().amax((1, 2, 3)) <= 0.3 + 1e-6).all()
