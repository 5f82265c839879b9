"""Objectives that make attributions robust: IG-NORM, IG-SUM-NORM, ART, IGR and AdvAAT (the curvature and
input-gradient regularisers SSR and input-gradient regularisation are in :mod:`.curvature`).

Every objective maps ``(model, x, y, *, generator=None)`` to ``(loss, logs)`` (see :mod:`attrobust.objectives`);
``x`` is float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, every budget is in pixel units.

Reductions. The TensorFlow reference code of the RAR paper summed its loss terms over the batch, so its
``lambda``/``beta`` were not per-example weights. Here every term is a per-example value (an attribution norm is
summed over the pixels of one example) averaged over the batch, so a weight means the same at every batch size.
For an Adam-trained model (all RAR settings) the two conventions give the same updates up to Adam's epsilon,
because Adam is invariant to a constant scale of the loss.

Second derivatives. Attribution regularisers differentiate a gradient. ReLU networks have zero second
derivative almost everywhere, which zeroes the input-curvature part of those gradients (their first-order
dependence on the weights remains). ``softplus_beta`` (where offered) computes the attribution on
``attrobust.models.softplus(model, softplus_beta)``, a parameter-sharing copy with Softplus(beta) in place of ReLU; ART
always does so (its paper's recipe), the others default to the model itself as their papers did.

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

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int
from ..attacks.pgd import pgd_loop, random_point
from ..attributions import gradient, integrated_gradients
from ..attributions.gradients import IG_RULES
from ..models import eval_norm, softplus
from ._base import (
    OBJECTIVES,
    Objective,
    Warmup,
    accuracy,
    attribution_model,
    check_beta,
    check_budget,
    check_flag,
    check_weight,
    create,
    describe,
    finish,
    logits_of,
)

SIZE_FUNCTIONS = ("l1", "sum")


def _start(x: torch.Tensor, eps: float, random_start: bool, generator: torch.Generator | None) -> torch.Tensor:
    """Inner-attack start: a uniform point of the l_inf eps ball (clamped to [0, 1]) or ``x`` itself."""
    return random_point(x, eps, "linf", generator) if random_start else x


def _inner(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    eps: float,
    step_size: float,
    steps: int,
    random_start: bool,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """``argmax_{‖x' - x‖_∞ ≤ eps, x' ∈ [0,1]} loss_fn(x')`` by signed PGD steps; detached ``(N, C, H, W)``."""
    x_init = _start(x, eps, random_start, generator)
    return pgd_loop(loss_fn, x, eps=eps, step_size=step_size, steps=steps, x_init=x_init).detach()


def loss_ig(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    rule: str = "right",
    checkpoint: bool = False,
) -> torch.Tensor:
    """``IG^ℓ_y(x, x')`` of the RAR paper: Integrated Gradients of the per-example cross-entropy from the baseline
    ``x`` to ``x_adv``, ``(N, C, H, W)``, differentiable w.r.t. ``x_adv`` and the parameters.

    Completeness: ``sum(IG) ~= CE(x') - CE(x)``, exactly so as ``steps`` grows.
    """
    return integrated_gradients(
        model, x_adv, y, baseline=x, steps=steps, rule=rule, create_graph=True, output="loss", checkpoint=checkpoint
    )


def _size(ig: torch.Tensor, size: str) -> torch.Tensor:
    """The RAR size function ``s``: ``‖IG‖_1`` (``"l1"``) or ``sum(IG)`` (``"sum"``) per example ``(N,)``."""
    flat = ig.flatten(1)
    return flat.abs().sum(1) if size == "l1" else flat.sum(1)


def _check_rar(owner: str, ig_steps: int, attack_ig_steps: int, ig_rule: str, size: str) -> None:
    check_int(ig_steps, f"{owner} ig_steps", 1)
    check_int(attack_ig_steps, f"{owner} attack_ig_steps", 1)
    check_choice(ig_rule, f"{owner} ig_rule", IG_RULES)
    check_choice(size, f"{owner} size", SIZE_FUNCTIONS)


@OBJECTIVES.register("ig_norm")
def ig_norm(
    lam: float = 1.0,
    ig_steps: int = 50,
    attack_ig_steps: int = 10,
    eps: float = 0.3,
    step_size: float = 0.01,
    steps: int = 40,
    random_start: bool = True,
    eps_warmup: int = 0,
    ig_rule: str = "right",
    size: str = "l1",
    softplus_beta: float | None = None,
    ig_checkpoint: bool = False,
) -> Objective:
    """IG-NORM (RAR paper eq. 4 with ``s = ‖·‖_1`` on the input layer; IGR paper appendix B.2 eq. 46):
    ``CE(f(x), y) + lam * max_{‖x' - x‖_∞ ≤ eps} ‖IG^ℓ_y(x, x')‖_1``.

    ``IG^ℓ_y(x, x')`` is :func:`loss_ig`, Integrated Gradients of the cross-entropy from ``x`` to ``x'``. The
    inner maximiser ``x*`` is found by PGD (``steps`` signed steps of ``step_size``, random start) on the
    regulariser computed with the coarser ``attack_ig_steps`` points (the RAR paper's "m in the attack step"); the
    outer loss uses ``ig_steps`` points (its "m in the gradient step") and is differentiated through IG.
    Defaults: the RAR MNIST setting (lam 1, m 50 / 10, eps 0.3, 40 steps of 0.01).

    ``size="sum"`` replaces the 1-norm by the plain sum. With ``lam=1`` the objective is then
    ``CE(x) + max (CE(x') - CE(x)) = max CE(x')``, the adversarial loss (RAR Proposition 1; exact up to IG's
    quadrature error). With ``ig_steps=1``, ``ig_rule="left"`` the regulariser is ``‖(x' - x) ⊙ ∇ℓ(x)‖_1`` whose
    maximum over the ball is ``eps * ‖∇ℓ(x)‖_1`` (RAR Proposition 2: input-gradient regularisation with
    ``lam' = lam * eps``; see :func:`input_gradient_reg` with ``q=1``).

    Modes: the CE follows the model's mode; the inner search (IG only) and the outer IG run in ``eval_norm``.

    Reduction: per-example CE and IG norms (summed over pixels), averaged over the batch. Logs: ``loss``,
    ``acc`` (clean), ``ce``, ``ig_norm``, ``eps``. ``eps_warmup``: linear budget ramp as in ``pgd_at``.
    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """
    lam = check_weight(lam, "ig_norm lam")
    check_budget("ig_norm", eps, step_size, steps, eps_warmup)
    _check_rar("ig_norm", ig_steps, attack_ig_steps, ig_rule, size)
    check_beta(softplus_beta, "ig_norm softplus_beta")
    check_flag(ig_checkpoint, "ig_norm ig_checkpoint")
    warmup = Warmup(eps_warmup)

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        attr = attribution_model(model, softplus_beta)
        e = eps * warmup.fraction
        with eval_norm(attr):
            x_adv = _inner(
                lambda xa: _size(loss_ig(attr, x, xa, y, attack_ig_steps, ig_rule), size),
                x, e, step_size * warmup.fraction, steps, random_start, generator,
            )  # fmt: skip
        logits = logits_of(model, x, y)
        ce = F.cross_entropy(logits, y)
        with eval_norm(attr):
            reg = _size(loss_ig(attr, x, x_adv, y, ig_steps, ig_rule, ig_checkpoint), size).mean()
        loss = ce + lam * reg
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                "ig_norm": float(reg.detach()), "eps": e}  # fmt: skip
        return loss, logs, x_adv

    name = describe("ig_norm", lam=lam, ig_steps=ig_steps, attack_ig_steps=attack_ig_steps, eps=eps,
                    step_size=step_size, steps=steps, random_start=random_start, eps_warmup=eps_warmup,
                    ig_rule=ig_rule, size=size, softplus_beta=softplus_beta)  # fmt: skip
    return finish(adversarial, name, warmup)


@OBJECTIVES.register("ig_sum_norm")
def ig_sum_norm(
    beta: float = 0.1,
    ig_steps: int = 50,
    attack_ig_steps: int = 10,
    eps: float = 0.3,
    step_size: float = 0.01,
    steps: int = 40,
    random_start: bool = True,
    eps_warmup: int = 0,
    ig_rule: str = "right",
    size: str = "l1",
    softplus_beta: float | None = None,
    ig_checkpoint: bool = False,
) -> Objective:
    """IG-SUM-NORM (RAR paper; IGR paper appendix B.2 eq. 47):
    ``max_{‖x' - x‖_∞ ≤ eps} CE(f(x'), y) + beta * ‖IG^ℓ_y(x, x')‖_1``.

    The inner maximiser ``x*`` of the whole bracket is found by PGD (random start) with ``attack_ig_steps`` IG
    points; the outer loss evaluates the bracket at ``x*`` with ``ig_steps`` points and is differentiated
    through IG. ``beta`` is the paper's weight (0.1 on MNIST, the default; RAR appendix C.1.1); the Softplus
    sharpness of an optional smooth attribution copy is ``softplus_beta``. With ``beta=0`` the objective is
    PGD adversarial training with the same random start. ``size="sum"`` swaps the 1-norm for the plain sum.

    Modes: the bracket's CE follows the model's mode, in the inner search too (PGD-AT's convention, so
    ``beta=0`` is ``pgd_at`` on batch-norm nets as well); the IG term runs in ``eval_norm``.

    Reduction: per-example terms averaged over the batch. Logs: ``loss``, ``acc`` (on ``x*``), ``ce``,
    ``ig_norm``, ``eps``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """
    beta = check_weight(beta, "ig_sum_norm beta")
    check_budget("ig_sum_norm", eps, step_size, steps, eps_warmup)
    _check_rar("ig_sum_norm", ig_steps, attack_ig_steps, ig_rule, size)
    check_beta(softplus_beta, "ig_sum_norm softplus_beta")
    check_flag(ig_checkpoint, "ig_sum_norm ig_checkpoint")
    warmup = Warmup(eps_warmup)

    def bracket(model: nn.Module, attr: nn.Module, x: torch.Tensor, xa: torch.Tensor, y: torch.Tensor, m: int,
                checkpoint: bool = False):  # fmt: skip
        logits = logits_of(model, xa, y)
        ce = F.cross_entropy(logits, y, reduction="none")
        if not beta:
            return ce, torch.zeros_like(ce), logits
        with eval_norm(attr):
            return ce, _size(loss_ig(attr, x, xa, y, m, ig_rule, checkpoint), size), logits

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        attr = attribution_model(model, softplus_beta)
        e = eps * warmup.fraction

        def inner_loss(xa: torch.Tensor) -> torch.Tensor:
            ce, reg, _ = bracket(model, attr, x, xa, y, attack_ig_steps)
            return ce + beta * reg

        x_adv = _inner(inner_loss, x, e, step_size * warmup.fraction, steps, random_start, generator)
        ce, reg, logits = bracket(model, attr, x, x_adv, y, ig_steps, ig_checkpoint)
        loss = (ce + beta * reg).mean()
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach().mean()),
                "ig_norm": float(reg.detach().mean()), "eps": e}  # fmt: skip
        return loss, logs, x_adv

    name = describe("ig_sum_norm", beta=beta, ig_steps=ig_steps, attack_ig_steps=attack_ig_steps, eps=eps,
                    step_size=step_size, steps=steps, random_start=random_start, eps_warmup=eps_warmup,
                    ig_rule=ig_rule, size=size, softplus_beta=softplus_beta)  # fmt: skip
    return finish(adversarial, name, warmup)


def runner_up(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``i* = argmax_{i ≠ y} logits_i`` per row: ``(N, K), (N,) -> (N,)`` int64 (needs K >= 2)."""
    if logits.shape[1] < 2:
        raise ValueError(f"logits: expected at least 2 classes for a runner-up class, got {logits.shape[1]}")
    masked = logits.detach().scatter(1, y[:, None], float("-inf"))
    return masked.argmax(1)


def art_triplet(smooth: nn.Module, x: torch.Tensor, y: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """ART's attribution loss (ART paper eq. 5), per example ``(N,)``:
    ``log(1 + exp(-(d(g^{i*}(x), x) - d(g^y(x), x))))`` with ``d(g, x) = 1 - g·x / (‖g‖_2 ‖x‖_2)``.

    ``g^i(x) = ∇_x f_i(x)`` is the input gradient of logit ``i`` of ``smooth`` (the Softplus copy), computed with
    its graph so the loss is differentiable w.r.t. ``x`` and the parameters; ``other`` holds ``i*`` ``(N,)``.
    Both gradients come from one forward/backward pass over ``[x; x]``.
    """
    n = x.shape[0]
    pair = torch.cat([x, x])
    g = gradient(smooth, pair, torch.cat([y, other]), create_graph=True).flatten(1)
    distance = 1.0 - F.cosine_similarity(g, pair.flatten(1), dim=1, eps=1e-12)
    return F.softplus(-(distance[n:] - distance[:n]))


@OBJECTIVES.register("art")
def art(
    lam: float = 0.5,
    beta: float = 50.0,
    eps: float = 8 / 255,
    step_size: float = 1.5 / 255,
    steps: int = 3,
    random_start: bool = True,
    eps_warmup: int = 0,
) -> Objective:
    """Attributional Robustness Training (ART paper eq. 5-6, Algorithm 1):
    ``CE(f(x~), y) + lam * L_attr(x~, y)`` with ``x~ = argmax_{‖δ‖_∞ ≤ eps} L_attr(x + δ, y)``.

    ``L_attr`` is :func:`art_triplet`: a soft-margin triplet loss with the image as anchor, the gradient map of
    the true class as positive and that of the runner-up class ``i* = argmax_{i≠y} f_i`` as negative, on the
    cosine distance. Gradient maps (and so ``L_attr``) use ``softplus(model, beta)`` for its second derivative;
    the cross-entropy follows the ReLU path (the model itself). ``i*`` is taken from the model's logits at the
    point being scored (each inner iterate, then ``x~``). The inner maximisation starts uniformly in the eps ball
    (Algorithm 1, line 4) and takes ``steps`` signed steps of ``step_size``. Defaults: the paper's CIFAR-10
    setting (lam 0.5, beta 50, eps 8/255, 3 steps of 1.5/255).

    Modes: the CE follows the model's mode (as the reference code); the inner search (``L_attr`` alone),
    ``L_attr`` and ``i*`` run in ``eval_norm`` (the reference code used the statistics of its ``[x; x~]`` batch).

    Reduction: per-example terms averaged over the batch. Logs: ``loss``, ``acc`` (on ``x~``), ``ce``,
    ``attr`` (mean ``L_attr``), ``eps``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64
    ``(N,)``, at least 2 classes.
    """
    lam = check_weight(lam, "art lam")
    check_beta(beta, "art beta")
    check_budget("art", eps, step_size, steps, eps_warmup)
    warmup = Warmup(eps_warmup)

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        smooth = softplus(model, beta)
        e = eps * warmup.fraction

        def inner_loss(xa: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                other = runner_up(logits_of(model, xa, y), y)
            return art_triplet(smooth, xa, y, other)

        with eval_norm(model), eval_norm(smooth):
            x_adv = _inner(inner_loss, x, e, step_size * warmup.fraction, steps, random_start, generator)
        logits = logits_of(model, x_adv, y)
        ce = F.cross_entropy(logits, y)
        with eval_norm(model) as switched, eval_norm(smooth):
            per_example = logits
            if switched:  # the CE's logits used batch statistics: i* comes from the per-example logits
                with torch.no_grad():
                    per_example = logits_of(model, x_adv, y)
            attr = art_triplet(smooth, x_adv, y, runner_up(per_example, y)).mean()
        loss = ce + lam * attr
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                "attr": float(attr.detach()), "eps": e}  # fmt: skip
        return loss, logs, x_adv

    name = describe("art", lam=lam, beta=beta, eps=eps, step_size=step_size, steps=steps,
                    random_start=random_start, eps_warmup=eps_warmup)  # fmt: skip
    return finish(adversarial, name, warmup)


def _paired_ig(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, steps: int, checkpoint: bool = False
):
    """IG of the true-class logit (zero baseline, right rule) of ``x`` and ``x_adv`` in one pass, each flattened
    ``(N, C*H*W)``, differentiable w.r.t. the parameters."""
    n = x.shape[0]
    ig = integrated_gradients(model, torch.cat([x, x_adv]), torch.cat([y, y]), steps=steps, create_graph=True,
                              checkpoint=checkpoint)  # fmt: skip
    flat = ig.flatten(1)
    return flat[:n], flat[n:]


def igr(base: str = "pgd_at", lam: float = 1.0, ig_steps: int = 10, softplus_beta: float | None = None,
        ig_checkpoint: bool = False, **base_params: Any) -> Objective:  # fmt: skip
    """IGR (IGR paper eq. 3, Table 1, Algorithm 1): ``L_base + lam * (1 - cos(IG(x), IG(x~)))``.

    ``base`` is ``"pgd_at"``, ``"trades"`` or ``"mart"`` (any registered objective exposing ``adversarial``),
    built with ``base_params``; its own adversarial example ``x~`` is reused (the paper does not search for a
    separate maximiser of eq. 5). ``IG`` is Integrated Gradients of the true-class logit with a zero baseline and
    ``ig_steps`` right-Riemann points (IGR eq. 4), on the model itself or on its Softplus(``softplus_beta``) copy; both
    IGs carry their graph, so the regulariser trains the weights. The paper states no lambda or IG step count;
    the defaults (1.0, 10) are this package's. With ``lam=0`` the loss equals the base objective's.

    Reduction: the cosine term is per example, averaged over the batch, and added to the base loss (itself a
    batch mean). Logs: the base's logs, with ``loss`` replaced by the total, plus ``base_loss`` and ``igr``
    (mean ``1 - cos``). Registered as ``igr`` and as ``pgd_at+igr``, ``trades+igr``, ``mart+igr``.

    Modes: the base keeps its convention (``pgd_at`` searches in the model's mode, ``trades`` and ``mart`` in
    eval mode); both IGs run in ``eval_norm``.
    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """
    lam = check_weight(lam, "igr lam")
    check_int(ig_steps, "igr ig_steps", 1)
    check_beta(softplus_beta, "igr softplus_beta")
    check_flag(ig_checkpoint, "igr ig_checkpoint")
    base_objective = create(base, **base_params)
    base_adversarial = getattr(base_objective, "adversarial", None)
    if base_adversarial is None:
        raise ValueError(f"igr base: expected an objective with an adversarial example, got {base!r}")

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        base_loss, logs, x_adv = base_adversarial(model, x, y, generator=generator)
        attr = attribution_model(model, softplus_beta)
        with eval_norm(attr):
            ig_x, ig_adv = _paired_ig(attr, x, x_adv, y, ig_steps, ig_checkpoint)
        reg = (1.0 - F.cosine_similarity(ig_x, ig_adv, dim=1, eps=1e-12)).mean()
        loss = base_loss + lam * reg
        logs = {**logs, "loss": float(loss.detach()), "base_loss": float(base_loss.detach()),
                "igr": float(reg.detach())}  # fmt: skip
        return loss, logs, x_adv

    objective = finish(adversarial, f"{base_objective.__qualname__}+{describe('igr', lam=lam, ig_steps=ig_steps)}")
    set_step = getattr(base_objective, "set_step", None)
    if set_step is not None:
        objective.set_step = set_step  # type: ignore[attr-defined]
    return objective


OBJECTIVES.register("igr")(igr)


def _igr_with(base: str) -> Callable[..., Objective]:
    """The factory of ``<base>+igr``: :func:`igr` with ``base`` fixed."""

    def factory(
        lam: float = 1.0, ig_steps: int = 10, softplus_beta: float | None = None, ig_checkpoint: bool = False,
        **base_params: Any,
    ) -> Objective:
        return igr(base, lam=lam, ig_steps=ig_steps, softplus_beta=softplus_beta, ig_checkpoint=ig_checkpoint,
                   **base_params)  # fmt: skip

    factory.__doc__ = f"``{base}`` + IGR: :func:`igr` with ``base={base!r}`` (``base_params`` go to ``{base}``)."
    factory.__qualname__ = f"{base}+igr"
    return factory


for _base_name in ("pgd_at", "trades", "mart"):
    OBJECTIVES.register(f"{_base_name}+igr")(_igr_with(_base_name))


def pearson_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``PCL(a, b) = 1 - (PCC(a, b) + 1) / 2`` per row of ``(N, D)`` inputs (IGR paper eq. 48) -> ``(N,)``."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return 1.0 - (F.cosine_similarity(a, b, dim=1, eps=1e-12) + 1.0) / 2.0


@OBJECTIVES.register("adv_aat")
def adv_aat(
    lam: float = 1.0,
    ig_steps: int = 10,
    attack_ig_steps: int = 5,
    eps: float = 0.3,
    step_size: float = 0.01,
    steps: int = 40,
    random_start: bool = True,
    eps_warmup: int = 0,
    softplus_beta: float | None = None,
    ig_checkpoint: bool = False,
) -> Objective:
    """AdvAAT with the robust training loss (IGR paper appendix B.2 eq. 48):
    ``max_{‖x~ - x‖_∞ ≤ eps} CE(f(x~), y) + lam * PCL(IG(x), IG(x~))``, ``PCL = 1 - (PCC + 1) / 2``.

    ``IG`` is Integrated Gradients of the true-class logit (zero baseline); the inner maximiser uses
    ``attack_ig_steps`` points and ``IG(x)`` held fixed, the outer loss evaluates the bracket at ``x~`` with
    ``ig_steps`` points, both IGs carrying their graph. Defaults (lam 1, 10/5 IG points, the MNIST PGD budget)
    are this package's: the paper states none.

    Modes: the CE follows the model's mode, in the inner search too (PGD-AT's); every IG runs in ``eval_norm``.

    Reduction: per-example terms averaged over the batch. Logs: ``loss``, ``acc`` (on ``x~``), ``ce``, ``pcl``,
    ``eps``. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """
    lam = check_weight(lam, "adv_aat lam")
    check_budget("adv_aat", eps, step_size, steps, eps_warmup)
    check_int(ig_steps, "adv_aat ig_steps", 1)
    check_int(attack_ig_steps, "adv_aat attack_ig_steps", 1)
    check_beta(softplus_beta, "adv_aat softplus_beta")
    check_flag(ig_checkpoint, "adv_aat ig_checkpoint")
    warmup = Warmup(eps_warmup)

    def adversarial(
        model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float], torch.Tensor]:
        attr = attribution_model(model, softplus_beta)
        e = eps * warmup.fraction
        with eval_norm(attr):
            ig_clean = integrated_gradients(attr, x, y, steps=attack_ig_steps).flatten(1)

        def inner_loss(xa: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(logits_of(model, xa, y), y, reduction="none")
            with eval_norm(attr):
                ig_xa = integrated_gradients(attr, xa, y, steps=attack_ig_steps, create_graph=True).flatten(1)
            return ce + lam * pearson_loss(ig_clean, ig_xa)

        x_adv = _inner(inner_loss, x, e, step_size * warmup.fraction, steps, random_start, generator)
        logits = logits_of(model, x_adv, y)
        ce = F.cross_entropy(logits, y)
        with eval_norm(attr):
            pcl = pearson_loss(*_paired_ig(attr, x, x_adv, y, ig_steps, ig_checkpoint)).mean()
        loss = ce + lam * pcl
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                "pcl": float(pcl.detach()), "eps": e}  # fmt: skip
        return loss, logs, x_adv

    name = describe("adv_aat", lam=lam, ig_steps=ig_steps, attack_ig_steps=attack_ig_steps, eps=eps,
                    step_size=step_size, steps=steps, random_start=random_start, eps_warmup=eps_warmup,
                    softplus_beta=softplus_beta)  # fmt: skip
    return finish(adversarial, name, warmup)
