"""Attacks on predictions (PGD, FGSM, CW-l_inf, SPSA, transfer) and on attributions (IFIA, targeted manipulation),
plus the common corruptions.

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, budgets in pixel units.

The house: ``pgd.py`` (the one projected-gradient loop, projection, random start, model mode),
``adversarial.py`` (PGD, FGSM, CW-l_inf, SPSA, transfer), ``attribution.py`` (IFIA), ``targeted.py`` (targeted
manipulation), ``selection.py`` (:class:`~attrobust.attacks.selection.Best`, the keep-the-best bookkeeping both
attribution attacks share) and ``corruptions.py``. Attacks import ``attrobust._checks``, ``_ranking``,
``attributions`` (methods resolved with :func:`~attrobust.attributions.explainer`) and ``models``, never
``metrics``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._registry import Registry
from .adversarial import TransferResult, cw_linf, fgsm, margin_loss, pgd, spsa, transfer
from .attribution import IFIAResult, ifia, ifia_flat_start
from .corruptions import CORRUPTIONS, corrupt
from .pgd import model_mode, pgd_loop, project, random_point
from .targeted import ManipulationResult, shuffled_targets, targeted_manipulation

ATTACKS: Registry[Callable[..., Any]] = Registry("attack", {
    "pgd": pgd, "fgsm": fgsm, "cw_linf": cw_linf, "spsa": spsa, "transfer": transfer,
    "ifia": ifia, "targeted_manipulation": targeted_manipulation,
})  # fmt: skip

__all__ = [
    "ATTACKS",
    "CORRUPTIONS",
    "IFIAResult",
    "ManipulationResult",
    "TransferResult",
    "corrupt",
    "cw_linf",
    "fgsm",
    "ifia",
    "ifia_flat_start",
    "margin_loss",
    "model_mode",
    "pgd",
    "pgd_loop",
    "project",
    "random_point",
    "shuffled_targets",
    "spsa",
    "targeted_manipulation",
    "transfer",
]
