"""Training objectives: callables ``(model, x, y, *, generator=None) -> (loss, logs)``.

``x`` is float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; ``loss`` is a differentiable scalar and
``logs`` a ``dict[str, float]`` with at least ``"loss"`` and ``"acc"``. Build one with
``create(name, **params)`` (an unknown name or parameter raises ``ValueError`` listing the valid ones);
``OBJECTIVES.names()`` lists the registered ones. Composites are spelled ``trades+igr`` (``trades_igr``, the
spelling of preset files and run names, is read as the same: :func:`canonical_name`). Each objective is a frozen
dataclass whose fields are its hyper-parameters, validated when it is built; ``repr(objective)``
(``objective.describe()``) shows them.

The house (each file imports only ``_base`` of this package and the lower layers: attacks, attributions, models,
``_checks``, ``_registry``):

- ``_base.py``: the :class:`Objective` base (``__call__``, ``adversarial``, ``set_step``, ``describe``), the
  inner-attack :class:`Budget` (eps, step size, steps, ``eps_warmup``, ``random_start``; validated once, shared by
  every adversarial objective) with its warm-up, the registry and ``create``, shared checks and losses;
- ``adversarial.py``: on the prediction: ``natural``, ``pgd_at``, ``trades``, ``mart``;
- ``rar.py``: the RAR paper: ``ig_norm``, ``ig_sum_norm`` (one implementation, one class parameter apart);
- ``gradient_alignment.py``: the ART paper (input-gradient spatial alignment): ``art``;
- ``ig_alignment.py``: the IGR paper, aligning IG maps of ``x`` and ``x~``: ``igr`` (holds its base objective;
  registered as ``igr``, ``pgd_at+igr``, ``trades+igr``, ``mart+igr``) and ``adv_aat``;
- ``curvature.py``: input gradient and curvature: ``ssr``, ``input_gradient_reg``;
- ``attributional.py``: deprecated alias of the former home of the attribution objectives' helpers.

The public names ``natural``, ``pgd_at``, ... are the classes (``Natural``, ``PGDAT``, ...) under their
registry names, so ``objectives.pgd_at(eps=0.1)`` builds one with keyword hyper-parameters; ``igr(base, ...)``
is a function (a registered name and its parameters, or a built objective).

Objectives never change ``model.training`` of any module (the TRADES and MART inner attacks run in eval mode
and restore every flag); every objective has ``set_step(step)`` (the trainer calls it before every step; only an
``eps_warmup`` depends on it) and ``adversarial(model, x, y, *, generator=None) -> (loss, logs, x_adv)``, the batch
it trained on (``x`` itself without an inner attack), which IGR reuses from its base.

Conventions of the attribution objectives (``rar``, ``gradient_alignment``, ``ig_alignment``,
``curvature``):

Reductions. The TensorFlow reference code of the RAR paper summed its loss terms over the batch, so its
``lambda``/``beta`` were not per-example weights. Here every term is a per-example value (an attribution norm is
summed over the pixels of one example) averaged over the batch, so a weight means the same at every batch size.
For an Adam-trained model (all RAR settings) the two conventions give the same updates up to Adam's epsilon,
because Adam is invariant to a constant scale of the loss.

Second derivatives. Attribution regularisers differentiate a gradient. ReLU networks have zero second
derivative almost everywhere, which zeroes the input-curvature part of those gradients (their first-order
dependence on the weights remains). ``softplus_beta`` (where offered) computes the attribution on
``attrobust.models.softplus(model, softplus_beta)``, a parameter-sharing copy with Softplus(beta) in place of
ReLU; ART always does so (its paper's recipe), the others default to the model itself as their papers did.

Memory. The outer losses differentiate through ``ig_steps`` IG points; ``ig_checkpoint=True`` (IG-NORM,
IG-SUM-NORM, IGR, AdvAAT) recomputes each point during the backward pass instead of keeping its graph, so memory
stays at one point's graph (``attributions.integrated_gradients(checkpoint=True)``) at the cost of that
recomputation; the loss and gradients are the same.

Batch norm. Attributions are per-example quantities, computed for a batch as the gradient of a sum. Train-mode
batch norm breaks that: each IG path point (a batch) is normalised with its own statistics, so IG of a bias-free
conv + BN net degenerates, and every attribution pass writes the running statistics. So every attribution or
curvature term, and every inner search whose loss is only such a term (IG-NORM, ART), runs inside
``attrobust.models.eval_norm`` (BatchNorm with its running statistics, dropout off, nothing written; other
modules keep their mode), while the classification losses, including the CE part of the IG-SUM-NORM and AdvAAT
inner searches (PGD-AT searches), keep the model's mode: train mode under the trainer, as the papers train.
All-eval would never estimate the running statistics; all-train would not give the per-example terms the
papers define (RAR's reference nets have no batch norm). Inner attacks of the bases follow their reference code:
PGD-AT searches in the model's mode (Madry et al.'s ``cifar10_challenge`` attacks its ``mode='train'`` graph),
TRADES and MART in eval mode (``model.eval()`` for the search). Models without norm/dropout layers (the MNIST
nets) are untouched: their losses are bit-identical to the plain computation.
"""

from ._base import OBJECTIVES, Budget, BudgetedObjective, Objective, canonical_name, create
from .adversarial import MART, PGDAT, TRADES, Natural, mart, natural, pgd_at, trades
from .curvature import SSR, InputGradientReg, input_gradient_reg, input_hessian_top_eigenvalue, ssr
from .gradient_alignment import ART, art
from .ig_alignment import IGR, AdvAAT, adv_aat, igr
from .rar import IGNorm, IGSumNorm, ig_norm, ig_sum_norm

__all__ = [
    "ART",
    "IGR",
    "MART",
    "OBJECTIVES",
    "PGDAT",
    "SSR",
    "TRADES",
    "AdvAAT",
    "Budget",
    "BudgetedObjective",
    "IGNorm",
    "IGSumNorm",
    "InputGradientReg",
    "Natural",
    "Objective",
    "adv_aat",
    "art",
    "canonical_name",
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
