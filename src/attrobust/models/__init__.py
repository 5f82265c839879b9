"""Image classifiers: registered architectures, the normalisation layer, feature-map smoothing blocks, surgery
(softplus copies, smoothing insertion), checkpoints and :func:`eval_norm` (per-example normalisation for
attribution passes).

Tensor contract: models map float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)``.
"""

from attrobust.models.checkpoint import check_finite_weights, first_nonfinite, load, save
from attrobust.models.modes import batch_dependent, eval_norm, train_mode_layers
from attrobust.models.nets import MODELS, architecture_options, create
from attrobust.models.normalization import with_normalization
from attrobust.models.normalize import Normalize
from attrobust.models.smoothing import SMOOTHING_KINDS, SmoothingBlock
from attrobust.models.surgery import DEFAULT_SMOOTHING_AFTER, insert_smoothing, smoothing_positions, softplus

__all__ = [
    "DEFAULT_SMOOTHING_AFTER",
    "MODELS",
    "SMOOTHING_KINDS",
    "Normalize",
    "SmoothingBlock",
    "architecture_options",
    "batch_dependent",
    "check_finite_weights",
    "create",
    "eval_norm",
    "first_nonfinite",
    "insert_smoothing",
    "load",
    "save",
    "smoothing_positions",
    "softplus",
    "train_mode_layers",
    "with_normalization",
]
