"""Sample selections that depend on the evaluated model (``EvalConfig.sample``).

``"seeded_correct"``: ``n`` test images drawn at random, with the evaluation's ``seed``, from those the model
classifies correctly (the smoothing paper, section 4.1: "1000 randomly selected test images that the model
accurately classifies"). The split is visited in the order of a seeded permutation (the one of ``"seeded"``,
drawn from ``(seed, "sample")``) and the first ``n`` correctly classified images of that order are kept: a uniform
random subset of the correctly classified ones, the same for the same model, seed and split in every process.
Only as many images are classified as needed to find ``n`` (in batches of ``batch_size``).

Accuracies on such a sample are 1 by construction and PGD accuracy would be a conditional robust accuracy, so
:class:`~.config.EvalConfig` requires ``skip_pgd`` with it and the evaluation reports no natural accuracy: the
papers measure their accuracies on the whole test set, in a separate evaluation.

Tensor contract: images float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, the model returns logits.
"""

from __future__ import annotations

import torch
from torch import nn

from .._checks import warn_once
from ..attacks import model_mode
from ..data import ImageDataset
from .config import EvalConfig
from .seeding import derive_seed

MODEL_DEPENDENT = ("seeded_correct",)


def seeded_order(n_total: int, seed: int) -> torch.Tensor:
    """The seeded visiting order ``(n_total,)`` int64 of a split (the permutation ``sample: seeded`` cuts)."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(derive_seed(seed, "sample")))


@torch.inference_mode()
def seeded_correct(model: nn.Module, ds: ImageDataset, config: EvalConfig) -> torch.Tensor:
    """Indices ``(n,)`` int64 into ``ds`` of ``config.n`` correctly classified images drawn with ``config.seed``
    (all of them when ``n`` is None), in the drawn order; the model runs in eval mode on its parameters' device
    and every submodule's flag comes back. Fewer correctly classified images than ``n`` warns and keeps them all.
    """
    order = seeded_order(len(ds), config.seed)
    want = len(ds) if config.n is None else config.n
    device = next(iter(model.parameters()), torch.empty(0)).device
    kept: list[torch.Tensor] = []
    found = 0
    with model_mode(model, "eval"):
        for start in range(0, len(order), config.batch_size):
            if found >= want:
                break
            idx = order[start : start + config.batch_size]
            pred = model(ds.images[idx].to(device)).argmax(1).cpu()
            right = idx[pred == ds.labels[idx]]
            kept.append(right)
            found += len(right)
    chosen = torch.cat(kept)[:want] if kept else torch.empty(0, dtype=torch.int64)
    if config.n is not None and len(chosen) < config.n:
        warn_once(
            f"n: expected {config.n} correctly classified images (sample 'seeded_correct'), but the model "
            f"classifies only {len(chosen)} of the {len(ds)} images of the split correctly; evaluating those"
        )
    return chosen
