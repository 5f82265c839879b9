"""Tests for attrobust.models: architectures, Normalize, softplus surgery and checkpoints."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attrobust.models import MODELS, Normalize, create, load, save, softplus

# (name, create kwargs) on the input sizes each net is meant for; big nets at 32x32 and shallow/narrow.
NATURAL = [
    ("mnist_cnn", {"in_channels": 1, "input_size": 28}),
    ("mnist_cnn", {"in_channels": 3, "input_size": 32}),
    ("cnn4", {"in_channels": 1, "input_size": 28}),
    ("cnn4", {"in_channels": 3, "input_size": 32}),
    ("lenet", {"in_channels": 1, "input_size": 28}),
    ("lenet", {"in_channels": 3, "input_size": 32}),
    ("small_cnn", {"in_channels": 1, "input_size": 28}),
    ("small_cnn", {"in_channels": 3, "input_size": 32}),
    ("resnet18", {"in_channels": 3, "input_size": 32}),
    ("wrn", {"in_channels": 3, "input_size": 32, "depth": 10, "width": 1}),
    ("wrn", {"in_channels": 3, "input_size": 32, "depth": 16, "width": 2, "dropout": 0.3}),
    ("vgg16", {"in_channels": 3, "input_size": 32}),
    ("vgg16", {"in_channels": 1, "input_size": 28}),
]
IDS = [f"{n}-{kw['in_channels']}x{kw['input_size']}" + ("-d{depth}".format(**kw) if "depth" in kw else "")
       for n, kw in NATURAL]  # fmt: skip


def _images(kw: dict, n: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, kw["in_channels"], kw["input_size"], kw["input_size"], generator=g)


def _relus(model: nn.Module) -> list[nn.ReLU]:
    return [m for _, m in model.named_modules(remove_duplicate=False) if isinstance(m, nn.ReLU)]


def _tiny(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return create("small_cnn", num_classes=5, **kw)


# ---------------------------------------------------------------------------------------------- architectures


def test_every_registered_model_is_tested():
    assert {n for n, _ in NATURAL} == set(MODELS.names())
    assert set(MODELS.names()) == {"mnist_cnn", "cnn4", "lenet", "small_cnn", "resnet18", "wrn", "vgg16"}


@pytest.mark.parametrize(("name", "kw"), NATURAL, ids=IDS)
def test_model_logits_normalize_first_relu_modules_and_gradient_flow(name, kw):
    torch.manual_seed(0)
    model = create(name, num_classes=7, **kw).eval()
    children = list(model.named_children())
    assert children[0][0] == "normalize" and isinstance(children[0][1], Normalize)
    relus = _relus(model)
    assert relus and not any(r.inplace for r in relus)
    # every ReLU is its own module (no module reused at two places of the graph)
    assert len({id(r) for r in relus}) == len(relus)
    x = _images(kw).requires_grad_(True)
    out = model(x)
    assert out.shape == (2, 7) and bool(torch.isfinite(out).all())
    out[:, 3].sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize(("name", "kw"), NATURAL, ids=IDS)
def test_spec_rebuilds_same_architecture(name, kw):
    torch.manual_seed(0)
    model = create(name, num_classes=4, **kw)
    spec = model.spec
    assert spec["name"] == name and spec["num_classes"] == 4
    assert spec["in_channels"] == kw["in_channels"] and spec["input_size"] == kw["input_size"]
    assert spec["mean"] == [0.0] * kw["in_channels"] and spec["std"] == [1.0] * kw["in_channels"]
    for key, value in kw.items():
        assert spec[key] == value
    rebuilt = create(**spec)
    a, b = model.state_dict(), rebuilt.state_dict()
    assert list(a) == list(b) and all(a[k].shape == b[k].shape for k in a)


def test_spec_records_builder_defaults():
    with torch.device("meta"):
        model = create("wrn", in_channels=3, input_size=32)
    assert (model.spec["depth"], model.spec["width"], model.spec["dropout"]) == (28, 10, 0.0)
    assert create("small_cnn").spec == {
        "name": "small_cnn", "num_classes": 10, "in_channels": 1, "input_size": 28, "mean": [0.0], "std": [1.0],
    }  # fmt: skip


def test_named_children():
    def names(model):
        return [n for n, _ in model.named_children()]

    for plain in ("mnist_cnn", "cnn4", "lenet", "small_cnn"):
        assert names(create(plain)) == ["normalize", "features", "classifier"]
    with torch.device("meta"):
        assert names(create("resnet18", in_channels=3, input_size=32)) == [
            "normalize", "stem", "layer1", "layer2", "layer3", "layer4", "pool", "fc",
        ]  # fmt: skip
        assert names(create("wrn", in_channels=3, input_size=32, depth=10, width=1)) == [
            "normalize", "stem", "block1", "block2", "block3", "head", "pool", "fc",
        ]  # fmt: skip
        assert names(create("vgg16", in_channels=3, input_size=32)) == ["normalize", "features", "pool", "classifier"]


def test_feature_maps_of_block_nets():
    torch.manual_seed(0)
    model = create("resnet18", in_channels=3, input_size=32).eval()
    h = model.stem(model.normalize(_images({"in_channels": 3, "input_size": 32})))
    shapes = []
    for i in range(1, 5):
        h = getattr(model, f"layer{i}")(h)
        shapes.append(tuple(h.shape))
    assert shapes == [(2, 64, 32, 32), (2, 128, 16, 16), (2, 256, 8, 8), (2, 512, 4, 4)]


def test_resnet18_relu_count_and_mnist_cnn_layers():
    with torch.device("meta"):
        resnet = create("resnet18", in_channels=3, input_size=32)
    assert len(_relus(resnet)) == 1 + 8 * 2  # stem + two separate ReLU modules per BasicBlock
    net = create("mnist_cnn")
    kinds = " ".join(type(m).__name__ for m in [*net.features, *net.classifier])
    assert kinds == "Conv2d ReLU MaxPool2d Conv2d ReLU MaxPool2d Flatten Linear ReLU Linear"
    fc = net.classifier[1]
    assert (fc.in_features, fc.out_features) == (7 * 7 * 64, 1024)


@pytest.mark.parametrize(
    ("name", "kw", "expected"),
    [
        ("resnet18", {}, 11_173_962),  # published: 11.2M
        ("wrn", {}, 36_479_194),  # WRN-28-10, published: 36.5M
        ("wrn", {"depth": 40, "width": 2}, 2_243_546),  # WRN-40-2, published: 2.2M
        ("vgg16", {}, 14_728_266),  # VGG-16-BN (CIFAR head), published: 14.7M
        ("mnist_cnn", {"in_channels": 1, "input_size": 28}, 3_274_634),  # Madry et al. MNIST net, 3.27M
    ],
)
def test_parameter_counts_match_published_figures(name, kw, expected):
    opts = {"in_channels": 3, "input_size": 32, **kw}
    with torch.device("meta"):
        model = create(name, num_classes=10, **opts)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_small_cnn_is_small():
    assert sum(p.numel() for p in create("small_cnn").parameters()) < 50_000


def test_wrn_dropout_is_active_only_in_train_mode():
    torch.manual_seed(0)
    model = create("wrn", in_channels=3, input_size=32, depth=10, width=1, dropout=0.5)
    x = _images({"in_channels": 3, "input_size": 32}, n=4)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.allclose(model(x), model(x))


def test_create_with_normalisation_matches_manual_normalisation():
    model = _tiny(in_channels=3, input_size=32, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3]).eval()
    assert model.spec["mean"] == [0.5, 0.4, 0.3] and model.spec["std"] == [0.2, 0.25, 0.3]
    x = _images({"in_channels": 3, "input_size": 32})
    manual = (x - torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.2, 0.25, 0.3]).view(1, 3, 1, 1)
    torch.testing.assert_close(model(x), model[1:](manual))


def test_create_is_seeded():
    x = _images({"in_channels": 1, "input_size": 28})
    torch.testing.assert_close(_tiny(3)(x), _tiny(3)(x))
    assert not torch.allclose(_tiny(3)(x), _tiny(4)(x))


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'resnet99'") as err:
        create("resnet99")
    for valid in MODELS.names():
        assert valid in str(err.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        (("small_cnn",), {"depth": 3}, "unknown option"),
        (("wrn",), {"depth": 20}, "divisible by 6"),
        (("wrn",), {"depth": 4}, "depth"),
        (("wrn",), {"width": 0}, "width"),
        (("wrn",), {"dropout": 1.5}, "dropout"),
        (("small_cnn", 0), {}, "num_classes"),
        (("small_cnn",), {"in_channels": "3"}, "in_channels"),
        (("small_cnn",), {"input_size": 0}, "input_size"),
        (("small_cnn",), {"in_channels": 3, "mean": [0.5]}, "expected 3 values"),
        (("small_cnn",), {"std": [0.0]}, "std"),
        (("small_cnn",), {"std": "wide"}, "std"),
        (("mnist_cnn",), {"input_size": 2}, "too small"),
        (("cnn4",), {"input_size": 8}, "too small"),
    ],
)
def test_create_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        create(*args, **kwargs)


def test_vgg16_handles_other_input_sizes():
    torch.manual_seed(0)
    model = create("vgg16", num_classes=3, in_channels=3, input_size=20).eval()
    assert model(torch.rand(2, 3, 20, 20)).shape == (2, 3)


# ---------------------------------------------------------------------------------------------- Normalize


def test_normalize_forward_buffers_and_repr():
    norm = Normalize([0.5, 0.25], [0.5, 2.0])
    assert norm.mean.shape == (1, 2, 1, 1) and norm.std.shape == (1, 2, 1, 1)
    assert set(norm.state_dict()) == {"mean", "std"}
    x = torch.rand(3, 2, 4, 5)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 2.0], 1)
    torch.testing.assert_close(norm(x), expected)
    assert norm.num_channels == 2
    assert repr(norm) == "Normalize(mean=(0.5, 0.25), std=(0.5, 2))"
    assert norm.to(torch.float64).mean.dtype == torch.float64


def test_normalize_accepts_tensors_and_passes_gradients():
    norm = Normalize(torch.tensor([0.1]), torch.tensor([0.2]))
    x = torch.rand(1, 1, 3, 3, requires_grad=True)
    norm(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 5.0))


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ([0.0, 0.0], [1.0], "same length"),
        ([0.0], [0.0], "std: expected values > 0"),
        ([0.0], [-1.0], "std"),
        ([], [], "at least one"),
        ([float("nan")], [1.0], "finite"),
        ([0.0], [float("inf")], "finite"),
        (["a"], [1.0], "numbers"),
        (torch.zeros(1, 1), [1.0], "1-D"),
    ],
)
def test_normalize_validation(mean, std, match):
    with pytest.raises(ValueError, match=match):
        Normalize(mean, std)


def test_normalize_rejects_wrong_channel_count():
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, H, W\), got \(2, 1, 4, 4\)"):
        Normalize([0.0] * 3, [1.0] * 3)(torch.rand(2, 1, 4, 4))
    with pytest.raises(ValueError, match="expected input of shape"):
        Normalize([0.0], [1.0])(torch.rand(4, 4))


# ---------------------------------------------------------------------------------------------- softplus


def test_softplus_shares_parameters_and_buffers():
    torch.manual_seed(0)
    model = create("wrn", in_channels=3, input_size=32, depth=10, width=1)
    smooth = softplus(model, 10.0)
    for (na, a), (nb, b) in zip(model.named_parameters(), smooth.named_parameters(), strict=True):
        assert na == nb and a is b and a.data_ptr() == b.data_ptr()
    for (na, a), (nb, b) in zip(model.named_buffers(), smooth.named_buffers(), strict=True):
        assert na == nb and a is b
    # batch-norm statistics updated through the original are seen by the copy
    before = smooth.block1[0].bn1.running_mean.clone()
    model.train()(_images({"in_channels": 3, "input_size": 32}))
    assert not torch.equal(smooth.block1[0].bn1.running_mean, before)


def test_softplus_replaces_every_relu_and_leaves_original_untouched():
    torch.manual_seed(0)
    model = create("resnet18", in_channels=3, input_size=32)
    n_relu = len(_relus(model))
    smooth = softplus(model, 7.0)
    assert not _relus(smooth)
    softs = [m for _, m in smooth.named_modules(remove_duplicate=False) if isinstance(m, nn.Softplus)]
    assert len(softs) == n_relu and all(s.beta == 7.0 for s in softs)
    assert len(_relus(model)) == n_relu
    assert smooth is not model and smooth.layer1 is not model.layer1
    assert [n for n, _ in smooth.named_children()] == [n for n, _ in model.named_children()]


def test_softplus_copy_follows_optimizer_steps_on_original():
    model = _tiny()
    smooth = softplus(model, 5.0)
    x = _images({"in_channels": 1, "input_size": 28}, n=4)
    y = torch.tensor([0, 1, 2, 3])
    before = smooth(x).detach()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    after = smooth(x).detach()
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, softplus(model, 5.0)(x).detach())


def test_softplus_converges_to_relu_model():
    torch.manual_seed(0)
    model = create("lenet", num_classes=10).eval()
    x = _images({"in_channels": 1, "input_size": 28}, n=4)
    with torch.no_grad():
        ref = model(x)
        err = {b: float((softplus(model, b)(x) - ref).abs().max()) for b in (1.0, 10.0, 1000.0)}
    assert err[1000.0] < err[10.0] < err[1.0]
    assert err[1000.0] < 1e-2 and err[1.0] > 1e-2


def _second_derivative(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    out = model(x)
    (g,) = torch.autograd.grad(out[:, 0].sum(), x, create_graph=True)
    v = torch.ones_like(x)
    (h,) = torch.autograd.grad((g * v).sum(), x, allow_unused=True, materialize_grads=True)
    return h


@pytest.mark.parametrize("name", ["small_cnn", "cnn4"])
def test_softplus_has_second_derivatives_where_relu_has_none(name):
    torch.manual_seed(0)
    model = create(name).eval()
    x = _images({"in_channels": 1, "input_size": 28})
    relu_h = _second_derivative(model, x)
    smooth_h = _second_derivative(softplus(model, 10.0), x)
    assert float(relu_h.abs().max()) == 0.0
    assert bool(torch.isfinite(smooth_h).all()) and float(smooth_h.abs().max()) > 0


def test_softplus_second_derivatives_through_batch_norm_blocks():
    torch.manual_seed(0)
    model = create("wrn", in_channels=3, input_size=16, depth=10, width=1).eval()
    h = _second_derivative(softplus(model, 10.0), _images({"in_channels": 3, "input_size": 16}))
    assert float(h.abs().max()) > 0


def test_softplus_copies_mode_at_call_time_then_independent():
    model = _tiny().eval()
    smooth = softplus(model, 10.0)
    assert not any(m.training for m in smooth.modules())
    model.train()
    assert not smooth.training and not smooth.features.training
    trained = softplus(model, 10.0)
    assert all(m.training for m in trained.modules())


def test_softplus_keeps_spec_as_own_copy():
    model = _tiny()
    smooth = softplus(model, 10.0)
    assert smooth.spec == model.spec
    smooth.spec["mean"].append(1.0)
    assert model.spec["mean"] == [0.0]


def test_softplus_structure_edits_do_not_leak_into_original():
    model = _tiny()
    smooth = softplus(model, 10.0)
    smooth.register_buffer("extra", torch.zeros(1))
    smooth.register_forward_hook(lambda *_: None)
    smooth.features.add_module("extra_layer", nn.Identity())
    assert "extra" not in dict(model.named_buffers())
    assert not model._forward_hooks
    assert not hasattr(model.features, "extra_layer")


@pytest.mark.parametrize("beta", [0.0, -1.0, float("inf"), float("nan"), "10", True, None])
def test_softplus_rejects_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        softplus(_tiny(), beta)


def test_softplus_rejects_non_module():
    with pytest.raises(ValueError, match=r"torch\.nn\.Module"):
        softplus(lambda x: x, 10.0)


# ---------------------------------------------------------------------------------------------- checkpoints


class _Foreign:
    """A class the weights-only unpickler must refuse."""


def _trained_tiny() -> nn.Module:
    model = _tiny(in_channels=1, input_size=28, mean=[0.1307], std=[0.3081])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = _images({"in_channels": 1, "input_size": 28}, n=8)
    nn.functional.cross_entropy(model(x), torch.arange(8) % 5).backward()
    opt.step()
    return model


def test_checkpoint_round_trip(tmp_path):
    model = _trained_tiny().train()
    config = {"model": {"name": "small_cnn"}, "lr": 0.01, "epochs": [1, 2], "note": None}
    path = save(model, tmp_path / "sub" / "model.pt", config=config, epoch=3, accuracy=0.5)
    assert path == tmp_path / "sub" / "model.pt" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]
    loaded, info = load(str(path))
    assert not loaded.training and not any(m.training for m in loaded.modules())
    x = _images({"in_channels": 1, "input_size": 28}, n=3, seed=5)
    assert torch.equal(loaded(x), model.eval()(x))
    assert info["config"] == config and info["meta"] == {"epoch": 3, "accuracy": 0.5}
    assert info["spec"] == model.spec and loaded.spec == model.spec
    assert info["format"] == "attrobust-checkpoint" and info["version"] == 1
    assert "state_dict" not in info


def test_checkpoint_round_trip_with_batch_norm_statistics(tmp_path):
    torch.manual_seed(0)
    model = create("wrn", num_classes=3, in_channels=3, input_size=16, depth=10, width=1)
    model.train()(torch.rand(4, 3, 16, 16))  # move running statistics away from their initial values
    save(model, tmp_path / "wrn.pt")
    loaded, info = load(tmp_path / "wrn.pt")
    assert info["config"] is None and info["meta"] == {}
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(x), model.eval()(x))


def test_checkpoint_is_weights_only_loadable(tmp_path):
    path = save(_tiny(), tmp_path / "m.pt", config={"a": 1})
    payload = torch.load(path, weights_only=True)
    assert set(payload) == {"format", "version", "spec", "state_dict", "config", "meta"}
    assert all(isinstance(v, torch.Tensor) for v in payload["state_dict"].values())


def test_load_refuses_pickled_objects(tmp_path):
    path = save(_tiny(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    payload["config"] = _Foreign()
    torch.save(payload, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        load(path)


def test_load_missing_file_names_path(tmp_path):
    missing = tmp_path / "nowhere" / "model.pt"
    with pytest.raises(FileNotFoundError, match=r"model\.pt") as err:
        load(missing)
    assert str(missing) in str(err.value)


def test_load_corrupted_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"garbage\.pt"):
        load(garbage)
    path = save(_tiny(), tmp_path / "m.pt")
    data = path.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"truncated\.pt"):
        load(truncated)


@pytest.mark.parametrize(
    "payload",
    [
        {"weight": torch.zeros(2)},  # a bare state dict
        [1, 2, 3],
        {"format": "other-tool", "version": 1},
    ],
)
def test_load_foreign_files(tmp_path, payload):
    path = tmp_path / "foreign.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match="expected an attrobust checkpoint"):
        load(path)


def _edit_payload(tmp_path, edit) -> object:
    path = save(_tiny(), tmp_path / "m.pt")
    payload = torch.load(path, weights_only=True)
    edit(payload)
    torch.save(payload, path)
    return path


def test_load_rejects_other_versions(tmp_path):
    path = _edit_payload(tmp_path, lambda p: p.update(version=2))
    with pytest.raises(ValueError, match="version 1, got 2"):
        load(path)


def test_load_rejects_weights_not_matching_spec(tmp_path):
    path = _edit_payload(tmp_path, lambda p: p["spec"].update(num_classes=9))
    with pytest.raises(ValueError, match="do not match"):
        load(path)


def test_load_rejects_broken_spec(tmp_path):
    path = _edit_payload(tmp_path, lambda p: p["spec"].pop("name"))
    with pytest.raises(ValueError, match="spec"):
        load(path)
    path = _edit_payload(tmp_path, lambda p: p.update(state_dict=None))
    with pytest.raises(ValueError, match="state_dict"):
        load(path)


def test_save_requires_spec(tmp_path):
    with pytest.raises(ValueError, match=r"attrobust\.models\.create"):
        save(nn.Linear(2, 2), tmp_path / "m.pt")
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"config": {"fn": print}}, r"config\['fn'\]"),
        ({"config": [1, 2]}, "config: expected a dict"),
        ({"config": {1.5: "x"}}, "keys"),
        ({"extra": object()}, r"meta\['extra'\]"),
    ],
)
def test_save_rejects_non_plain_metadata(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        save(_tiny(), tmp_path / "m.pt", **kwargs)


def test_loaded_model_feeds_softplus(tmp_path):
    path = save(_trained_tiny(), tmp_path / "m.pt")
    model, _ = load(path)
    smooth = softplus(model, 1000.0)
    x = _images({"in_channels": 1, "input_size": 28})
    assert not smooth.training
    with torch.no_grad():
        assert math.isclose(float((smooth(x) - model(x)).abs().max()), 0.0, abs_tol=1e-2)


def test_resnet18_imagenet_stem_is_the_standard_224_network() -> None:
    # He et al.'s ResNet-18 of 224x224 inputs: a 7x7 conv of stride 2 and a 3x3 max-pool of stride 2 before the
    # blocks, so the blocks see 56x56 maps (4x smaller than the CIFAR stem's) and the last one 7x7
    imagenet = create("resnet18", 10, in_channels=3, input_size=224, stem="imagenet")
    cifar = create("resnet18", 10, in_channels=3, input_size=224)
    x = torch.rand(1, 3, 224, 224)
    seen = {}
    for name in ("stem", "layer1", "layer4"):
        getattr(imagenet, name).register_forward_hook(lambda _m, _i, out, n=name: seen.__setitem__(n, out.shape))
    assert imagenet(x).shape == (1, 10)
    assert (seen["stem"][-1], seen["layer1"][-1], seen["layer4"][-1]) == (56, 56, 7)
    # the only weights that differ: the first conv's 7x7 kernels against 3x3
    n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n_params(imagenet) - n_params(cifar) == (7 * 7 - 3 * 3) * 3 * 64
    assert imagenet.spec["stem"] == "imagenet" and cifar.spec["stem"] == "cifar"
    assert create(**imagenet.spec).spec == imagenet.spec
    with pytest.raises(ValueError, match="stem: expected one of 'cifar', 'imagenet'"):
        create("resnet18", 10, in_channels=3, input_size=32, stem="vit")
