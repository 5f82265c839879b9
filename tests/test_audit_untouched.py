"""``audit`` gives the user's model back bit-identical: state dict (batch-norm running statistics and
``num_batches_tracked`` included) and the ``training`` flag of every submodule."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from attrobust.data import ImageDataset
from attrobust.experiments import audit as audit_lib
from attrobust.experiments.config import EvalConfig, from_dict
from test_audit import FAST


def bn_user_net() -> nn.Module:
    """A user's batch-norm classifier in train mode with its first batch norm frozen (eval), stats populated."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Dropout(0.2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 3),
    )  # fmt: skip
    with torch.no_grad():
        model(torch.rand(16, 3, 8, 8))
    model[1].eval()
    return model


def test_audit_leaves_the_model_bit_identical(tmp_path: Path) -> None:
    model = bn_user_net()
    g = torch.Generator().manual_seed(0)
    ds = ImageDataset(torch.rand(9, 3, 8, 8, generator=g), torch.tensor([0, 1, 2] * 3), ("a", "b", "c"), "toy")
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        out = audit_lib.audit(model, ds, config=from_dict(EvalConfig, FAST), out_dir=tmp_path, progress=False)
    assert not [w for w in record if "wrote" in str(w.message)]  # nothing written, not merely restored
    assert out["results"]["summary"]["n"] >= 1
    assert [m.training for m in model.modules()] == modes
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
