"""Per-example evaluation of a model: normalisation and dropout layers in eval behaviour, nothing else touched.

An attribution is a property of one example: it must not depend on the rest of its batch and must not change
the model. Batch normalisation in train mode breaks both: it normalises with the statistics of the batch being
evaluated (every path point of Integrated Gradients is a batch of its own, so a darkened path image is
renormalised to the same activations and IG degenerates) and it updates the running statistics with every
forward pass. Dropout in train mode makes the map random. :func:`eval_norm` switches exactly these layers to
eval mode for the duration of a ``with`` block: BatchNorm (every ``_BatchNorm`` variant: 1d/2d/3d, lazy, sync)
uses its running statistics, InstanceNorm with ``track_running_stats=True`` uses its running statistics, and
dropout (every ``_DropoutNd`` variant, alpha dropout included) is the identity. Running statistics and
``num_batches_tracked`` are never updated inside the block. Every other module keeps its mode, so a classification
loss computed outside the block keeps the train-mode behaviour the training recipes use.

The block switches only the submodules that are in train mode and restores each one's exact previous flag on
exit (also on an exception); a model without such layers (or already in eval mode) is not touched at all.
Parameters keep their graph: a loss built inside the block is differentiable w.r.t. the normalisation layers'
affine weights, and its backward pass (run after the block) uses the eval-mode operations recorded in the
forward pass. Code that recomputes a forward pass during the backward pass (activation checkpointing) must
enter the block inside the recomputed function too (``attributions.integrated_gradients(checkpoint=True)``
does).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.dropout import _DropoutNd
from torch.nn.modules.instancenorm import _InstanceNorm

from attrobust._checks import warn_once


def batch_dependent(module: nn.Module) -> bool:
    """Whether ``module`` in train mode mixes examples, updates buffers or draws random masks, and eval mode cures
    it: BatchNorm, InstanceNorm with running statistics, dropout."""
    if isinstance(module, _DropoutNd):
        return True
    if isinstance(module, (_BatchNorm, _InstanceNorm)):
        return bool(module.track_running_stats)
    return False


def train_mode_layers(model: nn.Module) -> list[nn.Module]:
    """The submodules of ``model`` (itself included) that are in train mode and :func:`batch_dependent`."""
    return [m for m in model.modules() if m.training and batch_dependent(m)]


def _warn_batch_statistics(model: nn.Module) -> None:
    """BatchNorm without running statistics uses the batch's statistics in eval mode too: say so, once."""
    warn_once(
        f"{type(model).__name__} has BatchNorm layers without running statistics (track_running_stats=False): "
        "they normalise with the statistics of the batch in eval mode too, so its attributions depend on the "
        "other examples of the batch; use BatchNorm with running statistics, GroupNorm or LayerNorm"
    )


@contextmanager
def eval_norm(model: nn.Module) -> Iterator[list[nn.Module]]:
    """Within the block, ``model``'s normalisation and dropout layers behave as in eval mode (per example).

    Yields the list of submodules it switched (empty when ``model`` has none in train mode: then nothing is
    touched). On exit each switched submodule (and any child of it) gets back its exact previous ``training``
    flag. Nested blocks are fine. Buffers are never written inside the block. Use it around every computation of
    an attribution on a model that may be in train mode, e.g. the attribution term of a training objective::

        loss = F.cross_entropy(model(x), y)  # train-mode batch norm, as the training recipe wants
        with attrobust.models.eval_norm(model):
            reg = attributions.integrated_gradients(model, x, y, create_graph=True).abs().sum()

    Tensor contract: unchanged; the model still maps ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)``, now
    with each row depending on its own example only (given no other batch-mixing module).
    """
    switched = []
    for m in model.modules():  # one walk: the only cost for a model without such layers
        if isinstance(m, _BatchNorm) and not m.track_running_stats:
            _warn_batch_statistics(model)
        elif m.training and batch_dependent(m):
            switched.append(m)
    if not switched:
        yield switched
        return
    flags = [(m, m.training) for layer in switched for m in layer.modules()]
    for layer in switched:
        layer.train(False)
    try:
        yield switched
    finally:
        for m, flag in flags:
            m.training = flag
