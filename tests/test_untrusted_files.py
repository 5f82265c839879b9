"""Hostile files that ask for more memory than they carry are refused before anything is allocated: a checkpoint
whose spec asks for a billion classes, and tiny pickles that make numpy's reconstructors allocate a gigabyte."""

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from attrobust import models
from attrobust.data._unpickle import MAX_ALLOCATED_BYTES, restricted_loads
from attrobust.models import checkpoint


def _hostile_checkpoint(tmp_path: Path, **spec_changes: object) -> Path:
    """A real small_cnn checkpoint whose spec is then edited (weights left as they are)."""
    torch.manual_seed(0)
    path = checkpoint.save(models.create("small_cnn", 10), tmp_path / "model.pt")
    payload = torch.load(path, weights_only=True)
    payload["spec"] = {**payload["spec"], **spec_changes}
    torch.save(payload, path)
    return path


def test_a_spec_asking_for_a_billion_classes_is_refused_before_building(tmp_path):
    path = _hostile_checkpoint(tmp_path, num_classes=10**9)
    with pytest.raises(ValueError, match=r"expected spec integers of at most 100000, got 1000000000"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "change",
    [{"num_classes": 50_000}, {"input_size": 4096}, {"in_channels": 64, "mean": [0.0] * 64, "std": [1.0] * 64}],
    ids=["classes", "image size", "channels"],
)
def test_a_spec_asking_for_more_weights_than_the_file_holds_is_refused(tmp_path, change):
    path = _hostile_checkpoint(tmp_path, **change)
    with pytest.raises(ValueError, match=r"expected a spec whose model has the \d+ weights the checkpoint holds"):
        checkpoint.load(path)


def test_an_honest_checkpoint_still_loads(tmp_path):
    torch.manual_seed(0)
    model = models.create("small_cnn", 10, smoothing=[{"after": "features.1", "kind": "median", "kernel": 3}])
    loaded, _ = checkpoint.load(checkpoint.save(model, tmp_path / "m.pt"))
    x = torch.rand(2, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)


# _reconstruct(ndarray, (10**9,), b"b"): an int8 array of a billion entries, from a 65-byte protocol-2 pickle.
RECONSTRUCT_1GB = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\xca\x9a;\x85C\x01b\x87R."
# ndarray((10**9,), b"b") called directly.
NDARRAY_1GB = b"\x80\x02cnumpy\nndarray\nJ\x00\xca\x9a;\x85C\x01b\x86R."


@pytest.mark.parametrize("payload", [RECONSTRUCT_1GB, NDARRAY_1GB], ids=["_reconstruct", "ndarray"])
def test_a_tiny_pickle_asking_for_a_gigabyte_is_refused(payload):
    assert len(payload) < 80
    with pytest.raises(pickle.UnpicklingError, match=r"expected at most \d+ bytes .* got 1000000000 bytes"):
        restricted_loads(payload)


def test_pickled_arrays_larger_than_the_bound_still_load():
    """Real arrays carry their bytes in the pickle: any size loads, under every protocol."""
    big = np.arange(MAX_ALLOCATED_BYTES // 2, dtype=np.float32).reshape(-1, 4)  # 2x the bound
    for protocol in (2, 4, 5):
        back = restricted_loads(pickle.dumps((big, "ok"), protocol=protocol))
        assert back[1] == "ok" and np.array_equal(back[0], big) and back[0].dtype == big.dtype


def test_reconstruct_refuses_array_subclasses():
    payload = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\ndtype\nK\x00\x85C\x01b\x87R."
    with pytest.raises(pickle.UnpicklingError, match=r"expected numpy\.ndarray"):
        restricted_loads(payload)
