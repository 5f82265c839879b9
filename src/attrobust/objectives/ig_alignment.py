"""IGR and AdvAAT: the attribution regularisers of the IGR paper (its eq. 3 and appendix B.2 eq. 48).

IGR adds ``lam * (1 - cos(IG(x), IG(x~)))`` to a base objective, reusing the base's adversarial example: it holds
the base objective (``pgd_at``, ``trades``, ``mart`` or any other) as a field; ``igr(base=...)`` and the
registered ``pgd_at+igr``, ``trades+igr``, ``mart+igr`` build it from a name and parameters. AdvAAT maximises
cross-entropy plus a Pearson-correlation loss between IG maps. Conventions (reductions, ``softplus_beta``,
``ig_checkpoint``, batch norm) are those of the attribution objectives, stated in :mod:`attrobust.objectives`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_int
from ..attributions import integrated_gradients
from ..models import eval_norm
from ._base import (
    OBJECTIVES,
    AdversarialResult,
    BudgetedObjective,
    Objective,
    accuracy,
    attribution_model,
    check_beta,
    check_flag,
    check_weight,
    create,
    logits_of,
    objective_dataclass,
)


def paired_ig(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, steps: int, checkpoint: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """IG of the true-class logit (zero baseline, right rule) of ``x`` and ``x_adv`` in one pass, each flattened
    ``(N, C*H*W)``, differentiable w.r.t. the parameters."""
    n = x.shape[0]
    ig = integrated_gradients(model, torch.cat([x, x_adv]), torch.cat([y, y]), steps=steps, create_graph=True,
                              checkpoint=checkpoint)  # fmt: skip
    flat = ig.flatten(1)
    return flat[:n], flat[n:]


@objective_dataclass
class IGR(Objective):
    """IGR (IGR paper eq. 3, Table 1, Algorithm 1): ``L_base + lam * (1 - cos(IG(x), IG(x~)))``.

    ``base`` is the base objective (built by :func:`igr` from ``"pgd_at"``, ``"trades"``, ``"mart"`` or any
    registered name, with ``base_params``); its own adversarial example ``x~`` is reused (the paper does not
    search for a separate maximiser of eq. 5). ``IG`` is Integrated Gradients of the true-class logit with a zero
    baseline and ``ig_steps`` right-Riemann points (IGR eq. 4), on the model itself or on its
    Softplus(``softplus_beta``) copy; both IGs carry their graph, so the regulariser trains the weights. The paper
    states no lambda or IG step count; the defaults (1.0, 10) are this package's. With ``lam=0`` the loss equals
    the base objective's.

    Reduction: the cosine term is per example, averaged over the batch, and added to the base loss (itself a
    batch mean). Logs: the base's logs, with ``loss`` replaced by the total, plus ``base_loss`` and ``igr``
    (mean ``1 - cos``). Registered as ``igr`` and as ``pgd_at+igr``, ``trades+igr``, ``mart+igr``.

    Modes: the base keeps its convention (``pgd_at`` searches in the model's mode, ``trades`` and ``mart`` in
    eval mode); both IGs run in ``eval_norm``.
    Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``.
    """

    name: ClassVar[str] = "igr"
    base: Objective
    lam: float = 1.0
    ig_steps: int = 10
    softplus_beta: float | None = None
    ig_checkpoint: bool = False

    def __post_init__(self) -> None:
        self._set_field("lam", check_weight(self.lam, f"{self.name} lam"))
        check_int(self.ig_steps, f"{self.name} ig_steps", 1)
        check_beta(self.softplus_beta, f"{self.name} softplus_beta")
        check_flag(self.ig_checkpoint, f"{self.name} ig_checkpoint")
        if not isinstance(self.base, Objective):
            raise ValueError(f"igr base: expected an objective with an adversarial example, got {self.base!r}")

    def set_step(self, step: int) -> None:
        """The base's warm-up follows the training step."""
        self.base.set_step(step)

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        base_loss, logs, x_adv = self.base.adversarial(model, x, y, generator=generator)
        attr = attribution_model(model, self.softplus_beta)
        with eval_norm(attr):
            ig_x, ig_adv = paired_ig(attr, x, x_adv, y, self.ig_steps, self.ig_checkpoint)
        reg = (1.0 - F.cosine_similarity(ig_x, ig_adv, dim=1, eps=1e-12)).mean()
        loss = base_loss + self.lam * reg
        logs = {**logs, "loss": float(loss.detach()), "base_loss": float(base_loss.detach()),
                "igr": float(reg.detach())}  # fmt: skip
        return loss, logs, x_adv


@dataclass(frozen=True)
class IGRFactory:
    """The registry's entry for IGR: builds :class:`IGR` from flat parameters, IGR's own (``lam``, ``ig_steps``,
    ``softplus_beta``, ``ig_checkpoint``) and the rest for the base, named by ``base`` (``<base>+igr``) or, when
    that is None, by the ``base`` parameter (``igr``, default ``"pgd_at"``)."""

    base: str | None = None

    def base_of(self, params: dict[str, Any]) -> str | Objective:
        """The base named by this factory or by ``params``."""
        return self.base if self.base is not None else params.get("base", "pgd_at")

    def parameters(self, params: dict[str, Any] | None = None) -> list[str]:
        """IGR's own parameters, then the base's (for a base given as a built objective: none)."""
        params = params or {}
        own = [p for p in IGR.parameters() if p != "base" or self.base is None]
        base = self.base_of(params)
        rest = {k: v for k, v in params.items() if k != "base"}  # what the base is built with
        more = [] if isinstance(base, Objective) else OBJECTIVES.get(base).parameters(rest)
        return list(dict.fromkeys([*own, *more]))

    @property
    def __signature__(self) -> inspect.Signature:
        """IGR's own keyword parameters with their defaults, then the base's (what ``inspect.signature`` and
        ``attrobust list`` show); for ``igr`` the ``base`` parameter first, default ``"pgd_at"``."""
        fields = inspect.signature(IGR).parameters.values()
        own = [p.replace(default="pgd_at") if p.name == "base" else p for p in fields
               if p.name != "base" or self.base is None]  # fmt: skip
        more = inspect.signature(OBJECTIVES.get(self.base_of({}))).parameters.values()
        return inspect.Signature(list({p.name: p for p in [*own, *more]}.values()), return_annotation=IGR)

    def __call__(self, **params: Any) -> IGR:
        """IGR (IGR paper eq. 3): the base objective's loss + ``lam * (1 - cos(IG(x), IG(x~)))``. ``x~`` is the
        base's adversarial example; the keyword parameters are IGR's own and the base's."""
        base = self.base_of(params)
        own = {k: params.pop(k) for k in IGR.parameters() if k in params and k != "base"}
        params.pop("base", None)
        if isinstance(base, str):
            base = create(base, **params)
        elif params:
            raise ValueError(f"igr: parameters {sorted(params)} given for a base that is already built")
        return IGR(base=base, **own)


OBJECTIVES.register("igr")(IGRFactory())
for _base_name in ("pgd_at", "trades", "mart"):
    OBJECTIVES.register(f"{_base_name}+igr")(IGRFactory(_base_name))


def igr(
    base: str | Objective = "pgd_at",
    *,
    lam: float = 1.0,
    ig_steps: int = 10,
    softplus_beta: float | None = None,
    ig_checkpoint: bool = False,
    **base_params: Any,
) -> IGR:
    """:class:`IGR` on ``base``: a registered name built with ``base_params`` (``igr("trades", beta=1.0)``) or
    a built objective (``igr(trades(beta=1.0))``). An unknown parameter raises ``ValueError`` listing IGR's
    parameters and the base's. Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``."""
    return create("igr", base=base, lam=lam, ig_steps=ig_steps, softplus_beta=softplus_beta,
                  ig_checkpoint=ig_checkpoint, **base_params)  # fmt: skip


def pearson_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``PCL(a, b) = 1 - (PCC(a, b) + 1) / 2`` per row of ``(N, D)`` inputs (IGR paper eq. 48) -> ``(N,)``."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return 1.0 - (F.cosine_similarity(a, b, dim=1, eps=1e-12) + 1.0) / 2.0


@OBJECTIVES.register("adv_aat")
@objective_dataclass
class AdvAAT(BudgetedObjective):
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

    name: ClassVar[str] = "adv_aat"
    lam: float = 1.0
    ig_steps: int = 10
    attack_ig_steps: int = 5
    random_start: bool = True
    softplus_beta: float | None = None
    ig_checkpoint: bool = False

    def check(self) -> None:
        self._set_field("lam", check_weight(self.lam, f"{self.name} lam"))
        check_int(self.ig_steps, f"{self.name} ig_steps", 1)
        check_int(self.attack_ig_steps, f"{self.name} attack_ig_steps", 1)
        check_beta(self.softplus_beta, f"{self.name} softplus_beta")
        check_flag(self.ig_checkpoint, f"{self.name} ig_checkpoint")

    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        attr = attribution_model(model, self.softplus_beta)
        with eval_norm(attr):
            ig_clean = integrated_gradients(attr, x, y, steps=self.attack_ig_steps).flatten(1)

        def inner_loss(xa: torch.Tensor) -> torch.Tensor:
            ce = F.cross_entropy(logits_of(model, xa, y), y, reduction="none")
            with eval_norm(attr):
                ig_xa = integrated_gradients(attr, xa, y, steps=self.attack_ig_steps, create_graph=True).flatten(1)
            return ce + self.lam * pearson_loss(ig_clean, ig_xa)

        x_adv = self.budget.search(inner_loss, x, self.scale, generator)
        logits = logits_of(model, x_adv, y)
        ce = F.cross_entropy(logits, y)
        with eval_norm(attr):
            pcl = pearson_loss(*paired_ig(attr, x, x_adv, y, self.ig_steps, self.ig_checkpoint)).mean()
        loss = ce + self.lam * pcl
        logs = {"loss": float(loss.detach()), "acc": accuracy(logits, y), "ce": float(ce.detach()),
                "pcl": float(pcl.detach()), "eps": self.eps * self.scale}  # fmt: skip
        return loss, logs, x_adv


adv_aat = AdvAAT
