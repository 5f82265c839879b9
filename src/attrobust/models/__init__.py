"""Image classifiers: registered architectures, the normalisation layer, softplus surgery and checkpoints.

Tensor contract: models map float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)``.
"""

from attrobust.models.checkpoint import load, save
from attrobust.models.nets import MODELS, create
from attrobust.models.normalize import Normalize
from attrobust.models.surgery import softplus

__all__ = ["MODELS", "Normalize", "create", "load", "save", "softplus"]
