import pytest
import torch

from attrobust._ranking import saliency_map
from attrobust.attacks.targeted import _normalised, shuffled_targets, targeted_manipulation
from attrobust.attributions import saliency


def _own_predictions(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


def test_shuffled_targets_is_a_seeded_derangement():
    maps = torch.arange(7.0).view(7, 1).repeat(1, 3)
    for seed in range(20):
        out = shuffled_targets(maps, torch.Generator().manual_seed(seed))
        assert (out[:, 0] != maps[:, 0]).all()
        assert sorted(out[:, 0].tolist()) == maps[:, 0].tolist()
    a = shuffled_targets(maps, torch.Generator().manual_seed(3))
    b = shuffled_targets(maps, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="at least 2"):
        shuffled_targets(maps[:1])


@pytest.mark.parametrize("eps", [None, 0.05])
def test_manipulation_moves_maps_towards_targets_and_keeps_labels(tiny_cnn, eps):
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(11))
    y = _own_predictions(tiny_cnn, x)
    res = targeted_manipulation(
        tiny_cnn, x, y, steps=40, lr=0.01, eps=eps, k=10, generator=torch.Generator().manual_seed(0)
    )
    clean_mse = (_normalised(saliency_map(saliency(tiny_cnn, x, y))) - _normalised(res.target_map)).pow(2).mean(1)
    assert res.valid.all()
    assert (res.target_mse <= clean_mse + 1e-6).all() and float(res.target_mse.mean()) < 0.9 * float(clean_mse.mean())
    assert (_own_predictions(tiny_cnn, res.x_adv) == y).all()
    assert res.x_adv.min() >= 0 and res.x_adv.max() <= 1
    if eps is not None:
        assert ((res.x_adv - x).abs().amax((1, 2, 3)) <= eps + 1e-6).all()
    assert ((res.step >= 1) & (res.step <= 40)).all()
    assert res.topk.shape == res.kendall.shape == (6,)


def test_manipulation_with_an_explicit_target_and_ig(tiny_cnn):
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(12))
    y = _own_predictions(tiny_cnn, x)
    target = torch.zeros(3, 64)
    target[:, :8] = 1.0  # push every map into the top row
    res = targeted_manipulation(tiny_cnn, x, y, target, attribution="ig", ig_steps=4, steps=10, lr=0.01, k=10)
    assert torch.equal(res.target_map, target)
    assert res.x_adv.shape == x.shape


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"target_map": "random"}, "target_map"),
        ({"target_map": torch.zeros(2, 10)}, "target_map"),
        ({"steps": 0}, "steps"),
        ({"lr": 0.0}, "lr"),
        ({"restarts": 2}, "restarts"),
        ({"eps": -1.0}, "eps"),
    ],
)
def test_manipulation_bad_input(tiny_cnn, kwargs, message):
    x = torch.rand(2, 1, 8, 8)
    y = torch.tensor([0, 1])
    with pytest.raises(ValueError, match="expected") as info:
        targeted_manipulation(tiny_cnn, x, y, **kwargs)
    assert message in str(info.value)
