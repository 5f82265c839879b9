"""Deprecated alias: the attribution objectives moved to :mod:`.rar` (IG-NORM, IG-SUM-NORM),
:mod:`.gradient_alignment` (ART) and :mod:`.ig_alignment` (IGR, AdvAAT); their conventions are stated in
:mod:`attrobust.objectives`. Import from there."""

from .gradient_alignment import ART, art, art_triplet, runner_up
from .ig_alignment import IGR, AdvAAT, adv_aat, igr, pearson_loss
from .rar import SIZE_FUNCTIONS, IGNorm, IGSumNorm, ig_norm, ig_sum_norm, loss_ig

__all__ = ["ART", "IGR", "SIZE_FUNCTIONS", "AdvAAT", "IGNorm", "IGSumNorm", "adv_aat", "art", "art_triplet",
           "ig_norm", "ig_sum_norm", "igr", "loss_ig", "pearson_loss", "runner_up"]  # fmt: skip
