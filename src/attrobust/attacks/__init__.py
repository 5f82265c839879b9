"""Attacks on predictions (PGD, FGSM) and on attributions (IFIA, targeted manipulation).

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, budgets in pixel units.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._registry import Registry
from .adversarial import fgsm, pgd
from .attribution import IFIAResult, ifia
from .pgd import model_mode, pgd_loop, project, random_point
from .targeted import ManipulationResult, shuffled_targets, targeted_manipulation

ATTACKS: Registry[Callable[..., Any]] = Registry("attack")
ATTACKS.register("pgd")(pgd)
ATTACKS.register("fgsm")(fgsm)
ATTACKS.register("ifia")(ifia)
ATTACKS.register("targeted_manipulation")(targeted_manipulation)

__all__ = [
    "ATTACKS",
    "IFIAResult",
    "ManipulationResult",
    "fgsm",
    "ifia",
    "model_mode",
    "pgd",
    "pgd_loop",
    "project",
    "random_point",
    "shuffled_targets",
    "targeted_manipulation",
]
