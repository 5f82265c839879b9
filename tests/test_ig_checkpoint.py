"""Integrated Gradients with activation checkpointing: same values, same gradients w.r.t. parameters and input."""

from __future__ import annotations

import pytest
import torch

from attrobust.attributions import integrated_gradients
from attrobust.models import softplus


@pytest.mark.parametrize("batch_steps", [1, 3])
def test_checkpointed_ig_has_the_same_values_and_gradients(tiny_cnn: torch.nn.Module, batch_steps: int) -> None:
    model = softplus(tiny_cnn, 5.0)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(4, 1, 8, 8, generator=g)
    y = torch.tensor([0, 1, 2, 0])
    results = []
    for checkpoint in (False, True):
        model.zero_grad()
        x = x0.clone().requires_grad_(True)
        ig = integrated_gradients(model, x, y, steps=6, create_graph=True, batch_steps=batch_steps,
                                  checkpoint=checkpoint)  # fmt: skip
        ig.abs().sum().backward()
        results.append((ig.detach(), x.grad.clone(), [p.grad for p in model.parameters()]))
    (a, ax, ap), (b, bx, bp) = results
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(ax, bx)
    assert [p is None for p in ap] == [p is None for p in bp]  # the last bias does not move an input gradient
    for pa, pb in zip(ap, bp, strict=True):
        if pa is not None:
            torch.testing.assert_close(pa, pb)


def test_checkpoint_flag_is_checked(tiny_cnn: torch.nn.Module) -> None:
    with pytest.raises(ValueError, match="checkpoint: expected a bool"):
        integrated_gradients(tiny_cnn, torch.rand(1, 1, 8, 8), 0, checkpoint="yes")
