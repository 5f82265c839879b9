"""Training objectives: callables ``(model, x, y, *, generator=None) -> (loss, logs)``.

``x`` is float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; ``loss`` is a differentiable scalar and
``logs`` a ``dict[str, float]`` with at least ``"loss"`` and ``"acc"``. Build one with
``create(name, **params)``; ``OBJECTIVES.names()`` lists the registered ones:

- on the prediction (:mod:`.adversarial`): ``natural``, ``pgd_at``, ``trades``, ``mart``;
- on the attribution (:mod:`.attributional`): ``ig_norm``, ``ig_sum_norm``, ``art``, ``igr`` (and
  ``pgd_at+igr``, ``trades+igr``, ``mart+igr``), ``adv_aat``;
- on the input gradient and curvature (:mod:`.curvature`): ``ssr``, ``input_gradient_reg``.

Objectives never change ``model.training`` of any module (the TRADES and MART inner attacks run in eval mode
and restore every flag); those with an ``eps_warmup`` expose ``set_step(step)``, and those that train on an
adversarial batch expose ``adversarial(model, x, y, *, generator=None) -> (loss, logs, x_adv)``.

Batch norm: classification losses follow the model's mode (train mode under the trainer); every attribution or
curvature term is computed per example inside ``attrobust.models.eval_norm`` (running statistics, dropout
off, no buffer written), so it never depends on the rest of the batch; see :mod:`.attributional`.
"""

from ._base import OBJECTIVES, Objective, create
from .adversarial import mart, natural, pgd_at, trades
from .attributional import adv_aat, art, ig_norm, ig_sum_norm, igr
from .curvature import input_gradient_reg, input_hessian_top_eigenvalue, ssr

__all__ = [
    "OBJECTIVES",
    "Objective",
    "adv_aat",
    "art",
    "create",
    "ig_norm",
    "ig_sum_norm",
    "igr",
    "input_gradient_reg",
    "input_hessian_top_eigenvalue",
    "mart",
    "natural",
    "pgd_at",
    "ssr",
    "trades",
]
