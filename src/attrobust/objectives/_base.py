"""What every objective shares: the :class:`Objective` base, the inner-attack :class:`Budget` and its warm-up,
the registry with ``create``, and the small checks and losses the objectives are built from.

An objective is a frozen dataclass whose fields are its hyper-parameters, validated in ``__post_init__``; calling
it, ``objective(model, x, y, *, generator=None) -> (loss, logs)``, validates the batch and runs
:meth:`Objective.compute`. Its :meth:`Objective.adversarial` returns the batch it trained on as well,
``(loss, logs, x_adv)``, so a regulariser such as IGR can reuse the base method's ``x~`` instead of searching
for its own. Objectives with an inner attack derive from :class:`BudgetedObjective`: their ``eps``,
``step_size``, ``steps``, ``eps_warmup`` (and ``random_start`` where offered) fields are validated once, as a
:class:`Budget`, which also runs the uniform-start PGD search most of them share.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, TypeVar, dataclass_transform

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_generator,
    check_images,
    check_int,
    check_labels,
    check_logits,
    check_model_input,
    check_positive,
    model_input_errors,
)
from .._registry import Registry
from ..attacks.pgd import pgd_loop, random_point
from ..models import softplus

Result = tuple[torch.Tensor, dict[str, float]]
AdversarialResult = tuple[torch.Tensor, dict[str, float], torch.Tensor]


class ObjectiveFactory(Protocol):
    """What the registry holds: an objective class, or a composite's factory (``igr``)."""

    def __call__(self, **params: Any) -> Objective: ...

    def parameters(self, params: dict[str, Any] | None = None) -> list[str]:
        """The parameter names ``__call__`` accepts (given the ``params`` at hand, e.g. a composite's base)."""
        ...


OBJECTIVES: Registry[ObjectiveFactory] = Registry("objective")

C = TypeVar("C", bound=type)


@dataclass_transform(kw_only_default=True, frozen_default=True)
def objective_dataclass(cls: C) -> C:
    """Make ``cls`` an objective dataclass: frozen, keyword-only fields (its hyper-parameters), and the
    ``repr`` of :meth:`Objective.describe` (``pgd_at(eps=0.3, ...)``)."""
    return dataclass(frozen=True, kw_only=True, repr=False)(cls)


@objective_dataclass
class Objective(abc.ABC):
    """A training objective: ``objective(model, x, y, *, generator=None) -> (loss, logs)``.

    ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; ``loss`` is a differentiable scalar and
    ``logs`` a ``dict[str, float]`` with at least ``"loss"`` and ``"acc"``. Subclasses are frozen dataclasses
    (fields = hyper-parameters) that set ``name`` (their registry name) and implement :meth:`compute`.
    """

    name: ClassVar[str] = "objective"

    def __call__(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> Result:
        loss, logs, _ = self.adversarial(model, x, y, generator=generator)
        return loss, logs

    def adversarial(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator | None = None
    ) -> AdversarialResult:
        """``(loss, logs, x_adv)``: the objective and the batch ``x_adv (N, C, H, W)`` it trained on (``x`` itself
        for objectives without an inner attack). Validates the batch, the model's input (dtype; another image size
        or channel count than the model takes raises ``ValueError``) and ``generator`` first."""
        check_batch(x, y)
        check_model_input(model, x)
        check_generator(generator)
        with model_input_errors(model, x):
            return self.compute(model, x, y, generator)

    @abc.abstractmethod
    def compute(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> AdversarialResult:
        """The objective on a validated batch: ``(loss, logs, x_adv)``."""

    def set_step(self, step: int) -> None:
        """Set the (0-based) training step of the next call; only a budget's ``eps_warmup`` depends on it."""
        del step  # nothing else depends on the step

    def describe(self) -> str:
        """``name(field=value, ...)`` over the hyper-parameters (the dataclass fields)."""
        items = (f"{p}={getattr(self, p)!r}" for p in self.parameters())
        return f"{self.name}({', '.join(items)})"

    def __repr__(self) -> str:
        return self.describe()

    @classmethod
    def parameters(cls, params: dict[str, Any] | None = None) -> list[str]:
        """The keyword parameters the class accepts (its hyper-parameter fields): the class's own first, then those
        of its bases (``ig_norm``: ``lam``, the RAR fields, then the budget)."""
        init = {f.name for f in dataclasses.fields(cls) if f.init}
        declared = (name for c in cls.__mro__ for name in vars(c).get("__annotations__", {}))
        return [name for name in dict.fromkeys(declared) if name in init]

    def _set_field(self, name: str, value: Any) -> None:
        """Replace a field from ``__post_init__`` (e.g. by its validated float); frozen afterwards."""
        object.__setattr__(self, name, value)


@dataclass(frozen=True)
class Budget:
    """The l_inf budget of an inner attack, in pixel units, with its linear warm-up.

    ``steps`` signed steps of ``step_size`` inside the ``eps`` ball (and [0, 1]); ``random_start``: a uniform
    start in the ball (``None`` where the objective draws its own start, as TRADES and MART do). With
    ``eps_warmup > 0`` the budget at (0-based) training step ``t`` is scaled by ``min(1, (t + 1) / eps_warmup)``
    (``eps_t = eps * scale``, ``step_size * scale``); before any step is set the full budget is used.
    ``owner`` names the objective in error messages.
    """

    eps: float
    step_size: float
    steps: int
    eps_warmup: int = 0
    random_start: bool | None = None
    owner: str = field(default="attack", repr=False, compare=False)

    def __post_init__(self) -> None:
        check_positive(float(self.eps), f"{self.owner} eps", allow_zero=True)
        check_positive(float(self.step_size), f"{self.owner} step_size", allow_zero=True)
        check_int(self.steps, f"{self.owner} steps", 0)
        check_int(self.eps_warmup, f"{self.owner} eps_warmup", 0)
        if self.random_start is not None:
            check_flag(self.random_start, f"{self.owner} random_start")

    def fraction(self, step: int) -> float:
        """The warm-up scale of the budget at (0-based) training step ``step``."""
        return min(1.0, (step + 1) / self.eps_warmup) if self.eps_warmup else 1.0

    def search(
        self,
        loss_fn: Callable[[torch.Tensor], torch.Tensor],
        x: torch.Tensor,
        fraction: float,
        generator: torch.Generator | None,
    ) -> torch.Tensor:
        """``argmax_{‖x' - x‖_∞ ≤ eps_t, x' ∈ [0,1]} loss_fn(x')`` by signed PGD steps from the budget's start
        (uniform in the ball when ``random_start``, else ``x``); detached ``(N, C, H, W)``."""
        eps = self.eps * fraction
        x_init = random_point(x, eps, "linf", generator) if self.random_start else x
        return pgd_loop(loss_fn, x, eps=eps, step_size=self.step_size * fraction, steps=self.steps,
                        x_init=x_init).detach()  # fmt: skip


class Warmup:
    """The one mutable piece of an objective: the warm-up scale of its budget at the current training step
    (1.0 until the trainer calls ``set_step``)."""

    def __init__(self) -> None:
        self.fraction = 1.0


@objective_dataclass
class BudgetedObjective(Objective):
    """An objective with an inner l_inf attack: its budget fields become the validated :attr:`budget`.

    Subclasses keep the MNIST defaults below or redeclare them (ART), add ``random_start: bool`` if they offer
    it, and validate their own fields in :meth:`check`.
    """

    eps: float = 0.3
    step_size: float = 0.01
    steps: int = 40
    eps_warmup: int = 0
    budget: Budget = field(init=False, repr=False, compare=False)
    warmup: Warmup = field(init=False, repr=False, compare=False, default_factory=Warmup)

    def __post_init__(self) -> None:
        self.check()
        # ``random_start`` is a field of the subclasses with a uniform start only (not of TRADES and MART)
        start = getattr(self, "random_start", None)
        budget = Budget(self.eps, self.step_size, self.steps, self.eps_warmup, start, owner=self.name)
        self._set_field("budget", budget)

    def check(self) -> None:
        """Validate (and normalise with :meth:`_set_field`) the fields other than the budget's."""

    def set_step(self, step: int) -> None:
        """Set the (0-based) training step the next call belongs to (the trainer calls it before every step)."""
        self.warmup.fraction = self.budget.fraction(step)

    @property
    def scale(self) -> float:
        """The current warm-up scale of the budget (1.0 outside a trainer)."""
        return self.warmup.fraction


def canonical_name(name: str) -> str:
    """The registered spelling of objective ``name``. A composite is registered and shown as ``<base>+igr`` (the
    base objective plus a regulariser, as the papers write it); ``<base>_igr``, the spelling of file and run
    names, reads as the same objective. Any other string comes back unchanged."""
    if not isinstance(name, str):
        raise TypeError(f"objective name: expected a str, got {type(name).__name__}")
    if name in OBJECTIVES:
        return name
    return next((n for n in OBJECTIVES.names() if n.replace("+", "_") == name), name)


def create(name: str, **params: Any) -> Objective:
    """Build the registered objective ``name`` (in any spelling :func:`canonical_name` reads) with its
    hyper-parameters ``params``.

    An unknown name or parameter raises ``ValueError`` listing the valid ones (for a composite such as
    ``trades+igr``: its own and its base's).
    """
    name = canonical_name(name)
    factory = OBJECTIVES.get(name)
    valid = factory.parameters(params)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ValueError(f"objective {name!r}: bad parameters {sorted(params)} (unknown: {', '.join(unknown)}); "
                         f"expected: {', '.join(valid) or '(none)'}")  # fmt: skip
    return factory(**params)


def check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """Validate a training batch: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``."""
    check_images(x)
    check_labels(y, x.shape[0])


def cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean cross-entropy of ``model(x)`` against ``y`` and its logs (``loss``, ``acc``)."""
    logits = logits_of(model, x, y)
    loss = F.cross_entropy(logits, y)
    return loss, {"loss": float(loss.detach()), "acc": accuracy(logits, y)}


def logits_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``model(x)`` checked to be logits ``(N, K)`` with ``y`` in ``[0, K)``."""
    logits = check_logits(model(x), x.shape[0])
    check_labels(y, x.shape[0], logits.shape[1])
    return logits


def accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of rows of ``logits (N, K)`` whose arg-max equals ``y (N,)``."""
    return float((logits.detach().argmax(1) == y).float().mean())


def check_weight(value: float, name: str) -> float:
    """A finite, non-negative loss weight (lambda, beta, ...) as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name}: expected a finite float >= 0, got {value!r}")
    check_positive(float(value), name, allow_zero=True)
    return float(value)


def attribution_model(model: nn.Module, beta: float | None) -> nn.Module:
    """``model`` itself, or its parameter-sharing Softplus(beta) copy when ``beta`` is given."""
    return model if beta is None else softplus(model, beta)


def check_beta(beta: float | None, name: str) -> None:
    """A Softplus sharpness: None (use the model itself) or a finite float > 0."""
    if beta is not None:
        check_weight(beta, name)
        if beta == 0:
            raise ValueError(f"{name}: expected None or a float > 0, got {beta!r}")


def check_flag(value: object, name: str) -> None:
    """An option that must be a bool (not merely truthy)."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected a bool, got {value!r}")
