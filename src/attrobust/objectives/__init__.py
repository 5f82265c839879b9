"""Training objectives: callables ``(model, x, y, *, generator=None) -> (loss, logs)``.

``x`` is float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; ``loss`` is a differentiable scalar and
``logs`` a ``dict[str, float]`` with at least ``"loss"`` and ``"acc"``. Build one with
``create(name, **params)``; ``OBJECTIVES.names()`` lists the registered ones.
"""

from .adversarial import OBJECTIVES, Objective, create, natural, pgd_at

__all__ = ["OBJECTIVES", "Objective", "create", "natural", "pgd_at"]
