"""Tests for feature-map smoothing blocks (attrobust.models.smoothing) and their insertion into models."""

from __future__ import annotations

import itertools

import kornia.filters as KF
import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage
from torch import nn

from attrobust.models import (
    DEFAULT_SMOOTHING_AFTER,
    MODELS,
    SMOOTHING_KINDS,
    SmoothingBlock,
    create,
    insert_smoothing,
    load,
    save,
    smoothing_positions,
    softplus,
)
from attrobust.models.smoothing import paper_sigma

KINDS = SMOOTHING_KINDS.names()
LOCAL = ("mean", "median", "gaussian")

# Every registered net on inputs it accepts; the big ones at 32x32 and as small as their options allow.
NETS = [
    ("mnist_cnn", {"in_channels": 1, "input_size": 28}),
    ("cnn4", {"in_channels": 1, "input_size": 28}),
    ("lenet", {"in_channels": 1, "input_size": 28}),
    ("small_cnn", {"in_channels": 1, "input_size": 28}),
    ("resnet18", {"in_channels": 3, "input_size": 32}),
    ("wrn", {"in_channels": 3, "input_size": 32, "depth": 10, "width": 1}),
    ("vgg16", {"in_channels": 3, "input_size": 32}),
]


def _rand(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _block(kind: str, channels: int = 4, torch_seed: int = 0, **kw) -> SmoothingBlock:
    torch.manual_seed(torch_seed)
    return SmoothingBlock(channels, kind, **kw)


def _tiny_wrn(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return create("wrn", num_classes=5, in_channels=3, input_size=16, depth=10, width=1, **kw)


def _blocks(model: nn.Module) -> list[SmoothingBlock]:
    return [m for m in model.modules() if isinstance(m, SmoothingBlock)]


# ---------------------------------------------------------------------------------------------- the block


def test_registry_holds_the_papers_kinds():
    assert set(KINDS) == {"mean", "median", "gaussian", "nonlocal_gaussian", "embedded_gaussian", "identity", "random"}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("shape", [(2, 4, 5, 6), (1, 4, 1, 1), (3, 4, 2, 7)])
def test_block_keeps_shape_and_is_residual_over_a_1x1_conv(kind, shape):
    block = _block(kind)
    x = _rand(*shape)
    out = block(x)
    assert out.shape == x.shape and out.dtype == x.dtype and bool(torch.isfinite(out).all())
    expected = x + nn.functional.conv2d(block.smooth(x), block.conv.weight, block.conv.bias)
    torch.testing.assert_close(out, expected)
    assert block.conv.kernel_size == (1, 1) and (block.conv.in_channels, block.conv.out_channels) == (4, 4)


@pytest.mark.parametrize("border_type", ["reflect", "replicate", "constant", "circular"])
@pytest.mark.parametrize("kernel", [1, 3, 5])
def test_local_filters_equal_kornia(border_type, kernel):
    x = _rand(2, 3, 6, 7)
    for kind, oracle in (
        ("mean", lambda t: KF.box_blur(t, (kernel, kernel), border_type=border_type)),
        ("median", lambda t: KF.median_blur(t, (kernel, kernel), border_type=border_type)),
        ("gaussian", lambda t: KF.gaussian_blur2d(t, (kernel, kernel), (0.7, 1.3), border_type=border_type)),
    ):
        opts = {"sigma": (0.7, 1.3)} if kind == "gaussian" else {}
        block = SmoothingBlock(3, kind, kernel, border_type=border_type, **opts)
        torch.testing.assert_close(block.smooth(x), oracle(x), msg=f"{kind}")


def test_local_filters_equal_scipy_with_mirrored_borders():
    x = _rand(2, 3, 6, 7, dtype=torch.float64)
    arr = x.numpy()
    box = ndimage.uniform_filter(arr, size=(1, 1, 3, 3), mode="mirror")
    med = ndimage.median_filter(arr, size=(1, 1, 3, 3), mode="mirror")
    gauss = ndimage.gaussian_filter(arr, sigma=(0, 0, 0.7, 1.3), mode="mirror", radius=(0, 0, 1, 1))
    for kind, expected, opts in (("mean", box, {}), ("median", med, {}), ("gaussian", gauss, {"sigma": [0.7, 1.3]})):
        block = SmoothingBlock(3, kind, **opts).double()
        np.testing.assert_allclose(block.smooth(x).numpy(), expected, rtol=1e-10, atol=1e-12, err_msg=kind)


def test_gaussian_default_sigma_is_the_appendix_b_rule_of_the_feature_map_size():
    x = _rand(2, 3, 5, 9)
    # 0.3 * ((size - 1) * 0.5 - 1) + 0.8 per axis, (sigma_y from H = 5, sigma_x from W = 9)
    assert paper_sigma(5, 9) == pytest.approx((1.1, 1.7))
    expected = KF.gaussian_blur2d(x, (3, 3), (1.1, 1.7))
    torch.testing.assert_close(SmoothingBlock(3, "gaussian").smooth(x), expected)
    # a scalar sigma is used on both axes
    torch.testing.assert_close(SmoothingBlock(3, "gaussian", sigma=0.9).smooth(x), KF.gaussian_blur2d(x, 3, (0.9, 0.9)))


@pytest.mark.parametrize("kind", LOCAL)
def test_reflect_falls_back_to_replicate_where_a_side_is_too_short(kind):
    x = _rand(2, 3, 2, 6)
    block = SmoothingBlock(3, kind, 5, **({"sigma": 1.0} if kind == "gaussian" else {}))
    expected = SmoothingBlock(3, kind, 5, border_type="replicate", **({"sigma": 1.0} if kind == "gaussian" else {}))
    torch.testing.assert_close(block.smooth(x), expected.smooth(x))
    one = _rand(2, 3, 1, 1)
    torch.testing.assert_close(SmoothingBlock(3, kind).smooth(one), one)  # a constant map stays constant


def _dense_nonlocal(x: torch.Tensor, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """Eq. 13 with f = exp(q_i . k_j), C = sum_j f, written out position by position."""
    n, _, h, w = x.shape
    out = torch.zeros_like(x)
    positions = list(itertools.product(range(h), range(w)))
    for b in range(n):
        for i in positions:
            f = torch.stack([torch.exp((query[b, :, i[0], i[1]] * key[b, :, j[0], j[1]]).sum()) for j in positions])
            for weight, j in zip(f / f.sum(), positions, strict=True):
                out[b, :, i[0], i[1]] += weight * x[b, :, j[0], j[1]]
    return out


def test_nonlocal_gaussian_equals_dense_computation():
    x = _rand(2, 2, 3, 3, dtype=torch.float64)
    block = SmoothingBlock(2, "nonlocal_gaussian").double()
    assert not list(block.smooth.parameters())
    torch.testing.assert_close(block.smooth(x), _dense_nonlocal(x, x, x))


def test_embedded_gaussian_equals_dense_computation():
    x = _rand(2, 2, 3, 3, dtype=torch.float64)
    block = _block("embedded_gaussian", channels=2, embed_channels=3).double()
    theta, phi = block.smooth.theta, block.smooth.phi
    assert theta.out_channels == 3 and theta.kernel_size == (1, 1) and phi.out_channels == 3
    q = torch.einsum("kc,nchw->nkhw", theta.weight[:, :, 0, 0], x) + theta.bias.view(1, -1, 1, 1)
    k = torch.einsum("kc,nchw->nkhw", phi.weight[:, :, 0, 0], x) + phi.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(block.smooth(x), _dense_nonlocal(x, q, k))
    assert _block("embedded_gaussian", channels=6).smooth.theta.out_channels == 3  # default C // 2
    assert _block("embedded_gaussian", channels=1).smooth.theta.out_channels == 1


def test_identity_kind_is_no_filtering_at_initialisation():
    block = _block("identity", kernel=5)
    x = _rand(2, 4, 6, 6)
    torch.testing.assert_close(block.smooth(x), x, rtol=0, atol=0)
    torch.testing.assert_close(block(x), x + block.conv(x))
    weight = block.smooth.conv.weight
    assert weight.shape == (4, 1, 5, 5) and block.smooth.conv.groups == 4 and weight.requires_grad


def test_random_kind_is_seeded_and_independent_of_the_global_rng():
    def kernel(seed_global: int, **kw) -> torch.Tensor:
        return _block("random", torch_seed=seed_global, kernel=3, **kw).smooth.conv.weight.detach()

    a, b = kernel(0, seed=7), kernel(123, seed=7)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, kernel(0, seed=8))
    torch.testing.assert_close(kernel(5), kernel(9))  # default seed 0
    assert float(a.abs().max()) <= 1 / 3 and float(a.std()) > 0
    x = _rand(2, 4, 6, 6)
    conv = _block("random", seed=7).smooth.conv
    torch.testing.assert_close(conv(x), nn.functional.conv2d(x, conv.weight.detach(), padding=1, groups=4))


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter_and_second_order_works(kind):
    block = _block(kind)
    x = (0.5 * _rand(2, 4, 5, 5)).requires_grad_(True)
    (g,) = torch.autograd.grad(block(x).square().sum(), x, create_graph=True)
    assert bool(torch.isfinite(g).all()) and float(g.detach().abs().sum()) > 0
    g.square().sum().backward()  # double backward through the block, as attribution attacks/training need
    params = dict(block.named_parameters())
    assert {"conv.weight", "conv.bias"} <= set(params)
    for name, p in params.items():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()) and float(p.grad.abs().sum()) > 0, name


def test_block_has_no_hidden_non_linearity_modules():
    for kind in KINDS:
        types = {type(m) for m in _block(kind).modules()}
        assert not types & {nn.Softplus, nn.Sigmoid, nn.Tanh, nn.GELU}


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((4, "blur"), {}, r"unknown smoothing kind 'blur'; expected one of: embedded_gaussian, gaussian"),
        ((4, "mean", 2), {}, r"kernel: expected an odd integer >= 1.*got 2"),
        ((4, "mean", 0), {}, r"kernel: expected an integer >= 1, got 0"),
        ((4, "mean", 3.0), {}, "kernel"),
        ((0, "mean"), {}, r"channels: expected an integer >= 1, got 0"),
        ((4, "mean"), {"sigma": 1.0}, r"'mean': unknown option\(s\) sigma; expected: border_type"),
        ((4, "nonlocal_gaussian"), {"seed": 1}, r"unknown option\(s\) seed; expected: \(none\)"),
        ((4, "gaussian"), {"sigma": 0.0}, r"sigma: expected a finite value > 0, got 0.0"),
        ((4, "gaussian"), {"sigma": [1.0, 2.0, 3.0]}, r"sigma: expected None, a number > 0 or a pair"),
        ((4, "gaussian"), {"sigma": "wide"}, "sigma"),
        ((4, "median"), {"border_type": "wrap"}, r"border_type: expected one of 'reflect'.*got 'wrap'"),
        ((4, "embedded_gaussian"), {"embed_channels": 0}, r"embed_channels: expected an integer >= 1, got 0"),
        ((4, "random"), {"seed": -1}, r"seed: expected an integer >= 0, got -1"),
    ],
)
def test_block_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        SmoothingBlock(*args, **kwargs)


def test_block_rejects_wrong_feature_maps():
    block = SmoothingBlock(4, "mean")
    with pytest.raises(ValueError, match=r"expected a feature map of shape \(N, 4, H, W\), got \(2, 3, 5, 5\)"):
        block(torch.rand(2, 3, 5, 5))
    with pytest.raises(ValueError, match=r"got \(4, 5, 5\)"):
        block(torch.rand(4, 5, 5))


# ---------------------------------------------------------------------------------------------- insertion


def test_positions_of_block_nets():
    torch.manual_seed(0)
    pos = smoothing_positions(create("resnet18", in_channels=3, input_size=32))
    assert pos["stem"] == (64, 32, 32) and pos["layer1"] == (64, 32, 32) and pos["layer1.0"] == (64, 32, 32)
    assert pos["layer2"] == (128, 16, 16) and pos["layer4"] == (512, 4, 4)
    assert list(pos)[:4] == ["stem.0", "stem.1", "stem.2", "stem"]  # forward order, children first
    assert "normalize" not in pos and "fc" not in pos and "pool" not in pos and "layer1.0.conv1" not in pos
    wrn = smoothing_positions(_tiny_wrn())
    assert [p for p in wrn if p.startswith("block") and "." not in p] == ["block1", "block2", "block3"]
    assert (wrn["block1"], wrn["block2"], wrn["block3"]) == ((16, 16, 16), (32, 8, 8), (64, 4, 4))
    small = smoothing_positions(create("small_cnn"))
    assert small == {
        "features.0": (16, 28, 28), "features.1": (16, 28, 28), "features.2": (16, 14, 14),
        "features.3": (32, 14, 14), "features.4": (32, 14, 14), "features.5": (32, 7, 7), "features": (32, 7, 7),
    }  # fmt: skip


def test_default_positions_cover_every_model_and_follow_the_first_block():
    assert set(DEFAULT_SMOOTHING_AFTER) == set(MODELS.names())
    for name, kw in NETS:
        with torch.device("meta"):
            model = create(name, **kw)
        assert DEFAULT_SMOOTHING_AFTER[name] in smoothing_positions(model), name
    with torch.device("meta"):
        assert type(create("cnn4").features[4]).__name__ == "MaxPool2d"
        assert type(create("vgg16", in_channels=3, input_size=32).features[6]).__name__ == "MaxPool2d"
    model = insert_smoothing(_tiny_wrn(), kind="median")
    assert model.spec["smoothing"] == [{"after": "block1", "kind": "median", "kernel": 3}]


@pytest.mark.parametrize(("name", "kw"), NETS, ids=[n for n, _ in NETS])
def test_blocks_at_every_valid_position_give_finite_logits(name, kw):
    with torch.device("meta"):  # shapes only
        positions = smoothing_positions(create(name, num_classes=7, **kw))
    entries = [{"after": p, "kind": KINDS[i % len(KINDS)]} for i, p in enumerate(positions)]
    torch.manual_seed(0)
    model = create(name, num_classes=7, smoothing=entries, **kw).eval()
    assert len(_blocks(model)) == len(positions)
    assert next(iter(model.named_children()))[0] == "normalize"
    # each block receives exactly the output of the module it follows
    seen: dict[str, torch.Tensor] = {}
    handles = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: seen.__setitem__(p, o))
               for p in positions]  # fmt: skip
    for p in positions:
        parent, _, child = p.rpartition(".")
        block = model.get_submodule(f"{parent}.smooth_{child}" if parent else f"smooth_{child}")
        assert isinstance(block, SmoothingBlock) and block.channels == positions[p][0]
        handles.append(block.register_forward_pre_hook(lambda m, i, p=p: seen.__setitem__(f"in:{p}", i[0])))
    with torch.no_grad():
        out = model(torch.rand(2, kw["in_channels"], kw["input_size"], kw["input_size"]))
    for h in handles:
        h.remove()
    assert out.shape == (2, 7) and bool(torch.isfinite(out).all())
    for p in positions:
        assert seen[f"in:{p}"] is seen[p], p


def test_insert_returns_an_independent_copy_and_keeps_the_original():
    model = _tiny_wrn()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = {**model.spec}
    new = insert_smoothing(model, "block2", "embedded_gaussian", embed_channels=4)
    assert [n for n, _ in model.named_children()] == ["normalize", "stem", "block1", "block2", "block3", "head",
                                                      "pool", "fc"]  # fmt: skip
    assert [n for n, _ in new.named_children()] == ["normalize", "stem", "block1", "block2", "smooth_block2",
                                                    "block3", "head", "pool", "fc"]  # fmt: skip
    assert model.spec == spec and "smoothing" not in model.spec
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ids = {id(p) for p in model.parameters()}
    assert not any(id(p) in ids for p in new.parameters())
    x = torch.rand(2, 3, 16, 16)
    assert new.eval()(x).shape == (2, 5)
    assert new.spec["smoothing"] == [{"after": "block2", "kind": "embedded_gaussian", "kernel": 3, "embed_channels": 4}]


def test_repeated_and_chained_insertions():
    model = _tiny_wrn()
    a = insert_smoothing(model, "block1", "mean")
    b = insert_smoothing(a, "block1", "median")  # again after block1: goes right after it, gets a fresh name
    c = insert_smoothing(b, "smooth_block1", "gaussian", sigma=0.5)  # after an inserted block
    names = [n for n, _ in c.named_children()]
    assert names[2:6] == ["block1", "smooth_block1_2", "smooth_block1", "smooth_smooth_block1"]
    assert [e["kind"] for e in c.spec["smoothing"]] == ["mean", "median", "gaussian"]
    torch.manual_seed(3)
    rebuilt = create(**c.spec)
    assert [n for n, _ in rebuilt.named_children()] == names
    assert [(m.kind, m.options) for m in _blocks(rebuilt)] == [(m.kind, m.options) for m in _blocks(c)]


def test_create_with_smoothing_equals_insert_with_the_same_seed():
    entries = [{"after": "block1", "kind": "embedded_gaussian"}, {"after": "block3.0", "kind": "random", "seed": 3}]
    torch.manual_seed(0)
    direct = create("wrn", num_classes=5, in_channels=3, input_size=16, depth=10, width=1, smoothing=entries)
    inserted = _tiny_wrn(0)
    for e in entries:
        inserted = insert_smoothing(inserted, **e)
    a, b = direct.state_dict(), inserted.state_dict()
    assert list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
    assert direct.spec == inserted.spec
    assert direct.spec["smoothing"] == [{"kernel": 3, **e} for e in entries]
    assert "block3.smooth_0.smooth.conv.weight" in a


def test_checkpoint_round_trip_of_a_smoothed_model(tmp_path):
    model = _tiny_wrn(1, smoothing=[{"after": "block1", "kind": "gaussian", "sigma": (0.8, 1.2)}])
    model = insert_smoothing(model, "block2", "embedded_gaussian")
    model = insert_smoothing(model, "block3.0", "random", seed=5)
    x = torch.rand(4, 3, 16, 16)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    nn.functional.cross_entropy(model.train()(x), torch.arange(4) % 5).backward()
    opt.step()  # move weights and batch-norm statistics away from initialisation
    path = save(model, tmp_path / "smoothed.pt", config={"model": {"name": "wrn"}})
    payload = torch.load(path, weights_only=True)
    assert payload["spec"]["smoothing"][0] == {"after": "block1", "kind": "gaussian", "kernel": 3, "sigma": [0.8, 1.2]}
    loaded, info = load(path)
    assert info["spec"] == model.spec and loaded.spec == model.spec
    assert torch.equal(loaded(x), model.eval()(x))
    assert [(m.kind, m.channels) for m in _blocks(loaded)] == [("gaussian", 16), ("embedded_gaussian", 32),
                                                               ("random", 64)]  # fmt: skip
    # the spec survives a YAML round trip (configs request smoothing the same way)
    torch.manual_seed(0)
    again = create(**yaml.safe_load(yaml.safe_dump(model.spec)))
    assert again.spec == model.spec and list(again.state_dict()) == list(model.state_dict())


def test_softplus_of_a_smoothed_model_swaps_every_relu_and_shares_parameters():
    model = insert_smoothing(_tiny_wrn(), "block1", "embedded_gaussian").eval()
    model = insert_smoothing(model, "head", "median")
    smooth = softplus(model, 1000.0)
    assert not any(isinstance(m, nn.ReLU) for m in smooth.modules())
    assert len(_blocks(smooth)) == 2 and smooth.spec == model.spec
    for (na, a), (nb, b) in zip(model.named_parameters(), smooth.named_parameters(), strict=True):
        assert na == nb and a is b
    assert smooth.smooth_block1 is not model.smooth_block1
    assert smooth.smooth_block1.smooth.theta.weight is model.smooth_block1.smooth.theta.weight
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        assert float((smooth(x) - model(x)).abs().max()) < 1e-2


def test_dry_runs_leave_modes_and_batch_norm_statistics_alone():
    model = _tiny_wrn().train()
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    smoothing_positions(model)
    new = insert_smoothing(model, "block1", "mean")
    assert all(m.training for m in model.modules()) and all(m.training for m in new.modules())
    for k, v in stats.items():
        assert torch.equal(model.state_dict()[k], v) and torch.equal(new.state_dict()[k], v)
    assert not insert_smoothing(model.eval(), "block1", "mean").smooth_block1.training


def test_insert_follows_device_and_dtype():
    model = _tiny_wrn().double()
    new = insert_smoothing(model, "block1", "embedded_gaussian")
    assert all(p.dtype == torch.float64 for p in new.smooth_block1.parameters())
    assert new.eval()(torch.rand(1, 3, 16, 16, dtype=torch.float64)).dtype == torch.float64


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda m: insert_smoothing(m, "block9"),
            r"after: expected one of the smoothing positions of model 'wrn' "
            r"\(.*block1.*\), got 'block9'",
        ),
        (lambda m: insert_smoothing(m, "normalize"), "got 'normalize'"),
        (lambda m: insert_smoothing(m, "fc"), "got 'fc'"),
        (lambda m: insert_smoothing(m, "block1.0.conv1"), "got 'block1.0.conv1'"),
        (lambda m: insert_smoothing(m, 3), r"expected 'after' to be a module path string or None, got 3"),
        (lambda m: insert_smoothing(m, "block1", "blur"), "unknown smoothing kind 'blur'; expected one of"),
        (lambda m: insert_smoothing(m, "block1", "mean", 4), "kernel: expected an odd integer"),
        (lambda m: insert_smoothing(m, "block1", "mean", seed=1), r"unknown option\(s\) seed"),
        (
            lambda m: insert_smoothing(m, "pool.0", "mean", 5, border_type="circular"),
            r"smoothing 'mean' after 'pool.0' \(64x1x1 map\): mean filter: expected a feature map of at least 2x2 "
            r"for circular padding with kernel 5, got 1x1",
        ),
        (lambda m: insert_smoothing(nn.Sequential(nn.Conv2d(1, 1, 1)), "0"), "attrobust.models.create"),
        (lambda m: smoothing_positions(nn.Linear(2, 2)), "attrobust.models.create"),
    ],
)
def test_insert_rejects_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call(_tiny_wrn())


@pytest.mark.parametrize(
    ("smoothing", "match"),
    [
        ("median", "smoothing: expected a list of block descriptions, got str"),
        ([["block1", "mean"]], r"smoothing\[0\]: expected a mapping like"),
        ([{"after": "block1"}, {"after": "nowhere"}], "got 'nowhere'"),
        ([{"kind": "blur"}], "unknown smoothing kind 'blur'"),
        ([{"after": "block1", "sigma": 1.0}], r"unknown option\(s\) sigma"),
    ],
)
def test_create_rejects_bad_smoothing(smoothing, match):
    with pytest.raises(ValueError, match=match):
        _tiny_wrn(smoothing=smoothing)


def test_create_without_smoothing_keeps_the_plain_spec():
    assert "smoothing" not in create("small_cnn").spec
    assert "smoothing" not in create("small_cnn", smoothing=[]).spec
