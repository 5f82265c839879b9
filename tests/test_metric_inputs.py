"""Metrics as users call them: torch tensors or numpy arrays, a batch or a single example, every listed metric
reachable as ``attrobust.metrics.<name>``."""

import numpy as np
import pytest
import torch

import attrobust.metrics as M
from attrobust.metrics import METRIC_KINDS, METRICS
from attrobust.metrics.inputs import KIND_SHAPES
from attrobust.metrics.similarity import kendall_tau as tensor_kendall_tau


def _pair(shape: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


# name -> (batched inputs, options); every registered metric taking arrays (kinds in KIND_SHAPES) has an entry.
def _cases() -> dict[str, tuple[tuple, dict]]:
    a4, b4 = _pair((3, 2, 6, 6))
    a3, b3 = _pair((3, 8, 8), 1)
    u, v = _pair((3, 7), 2)
    logits = torch.randn(3, 5, generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 4, 2])
    pred = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 6], [2, 0, 3, 3]])
    gt = torch.tensor([[0.0, 0, 4, 5], [0, 0, 2, 2], [2, 0, 3, 3]])
    return {
        "topk_intersection": ((a4, b4), {"k": 5}),
        "kendall_tau": ((a4, b4), {}),
        "spearman": ((a4.flatten(1), b4.flatten(1)), {}),
        "cosine": ((a4, b4), {}),
        "pearson": ((a4.flatten(1), b4.flatten(1)), {}),
        "ssim": ((a3, b3), {"win_size": 3}),
        "gini": ((a4,), {}),
        "goodman_kruskal_gamma": ((u, v), {}),
        "accuracy": ((logits, y), {}),
        "box_iou": ((pred, gt), {}),
        "gt_known_loc": ((pred, gt), {}),
        "top1_loc": ((pred, gt, logits, y), {}),
    }


ARRAY_KINDS = {"pair", "map", "values", "logits", "boxes", "boxes_top1"}


def test_every_array_metric_has_a_case():
    assert set(_cases()) == {n for n, k in METRIC_KINDS.items() if k in ARRAY_KINDS}


@pytest.mark.parametrize("name", sorted(_cases()))
def test_numpy_arrays_give_the_tensor_result(name):
    inputs, options = _cases()[name]
    want = M.METRICS.get(name)(*inputs, **options)
    got = getattr(M, name)(*(t.numpy() for t in inputs), **options)
    assert isinstance(got, torch.Tensor) and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("name", sorted(_cases()))
def test_a_single_example_gives_a_0_dim_result_equal_to_its_row(name):
    inputs, options = _cases()[name]
    batched = getattr(M, name)(*inputs, **options)
    for i in range(batched.shape[0]):
        for as_numpy in (False, True):
            one = [t[i].numpy() if as_numpy else t[i] for t in inputs]
            got = getattr(M, name)(*one, **options)
            assert isinstance(got, torch.Tensor) and got.dim() == 0, name
            torch.testing.assert_close(got, batched[i], rtol=1e-6, atol=1e-7, equal_nan=True)


def test_a_label_may_be_a_plain_int_for_one_example():
    logits = torch.tensor([0.1, 2.0, -1.0])
    assert float(M.accuracy(logits, 1)) == 1.0 and float(M.accuracy(logits, 0)) == 0.0


def test_tensor_batches_reach_the_metric_unchanged_and_keep_their_gradient():
    a, b = _pair((2, 1, 5, 5))
    a.requires_grad_(True)
    r = M.cosine(a, b)
    r.sum().backward()
    assert a.grad is not None and torch.equal(M.kendall_tau(a.detach(), b), tensor_kendall_tau(a.detach(), b))


def test_the_docstrings_say_which_shapes_they_accept():
    for name, kind in METRIC_KINDS.items():
        if kind in ARRAY_KINDS:
            doc = getattr(M, name).__doc__
            assert "single" in doc and "numpy" in doc, name
    assert "batched (N, D) or (N, C, H, W), single (D,) or (C, H, W)" in M.kendall_tau.__doc__
    assert set(KIND_SHAPES) >= ARRAY_KINDS


def test_a_batch_of_3_dim_maps_is_not_read_as_one_example():
    """SSIM's (N, H, W) maps stay a batch (one result each); one map (H, W) is the single example."""
    a, b = _pair((4, 8, 8))
    assert M.ssim(a, b, win_size=3).shape == (4,)
    assert M.ssim(a[0], b[0], win_size=3).shape == ()


def test_wrong_numpy_labels_still_name_what_is_expected():
    logits = np.zeros((2, 3), dtype=np.float32)
    with pytest.raises(ValueError, match=r"y: expected dtype torch.int64, got torch.int32"):
        M.accuracy(logits, np.array([0, 1], dtype=np.int32))


LISTED = [
    "topk_intersection", "kendall_tau", "spearman", "pearson", "cosine", "ssim", "gini", "ris", "ros", "rrs",
    "activation_consistency", "road", "deletion", "insertion", "euclidean_bound", "modified_euclidean_bound",
    "cosine_bound", "linf_bound", "local_linearity_eta", "boxes_from_maps", "gt_known_loc", "top1_loc",
    "corruption_accuracy", "accuracy",
]  # fmt: skip


@pytest.mark.parametrize("name", LISTED)
def test_every_listed_metric_is_reachable_from_the_package(name):
    assert callable(getattr(M, name)) and name in M.__all__


def test_every_registered_metric_is_the_package_attribute_of_its_name():
    for name in METRICS.names():
        assert getattr(M, name) is METRICS.get(name), name
