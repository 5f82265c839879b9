"""Typed experiment configuration: the config dataclasses, checked on construction (YAML in/out, merging and
dotted overrides live in :mod:`.yamlio` and are re-exported here).

A training run is described by :class:`TrainConfig` (data, model, objective, optimiser, length), an evaluation
by :class:`EvalConfig` (which test samples, the PGD attack on the prediction and the IFIA attack on the
attribution). Both are plain dataclasses:

- ``from_dict(cls, d)`` builds one from nested dicts and rejects unknown keys with a ``ValueError`` naming the
  key and the valid ones; values are checked against the annotations (``"1e-4"``, which YAML reads as a
  string, is accepted for a float field);
- ``to_dict(cfg)`` gives plain Python types, ``save_yaml``/``load_yaml`` write and read them
  (``yaml.safe_load`` only);
- ``apply_overrides(cfg, ["optim.lr=1e-3", "model.kwargs={width: 8}"])`` sets dotted paths, each value parsed by
  ``yaml.safe_load``.

:class:`EvalConfig` has no budget of its own (``eps``, ``step_size``, ``k`` are None): a dataset's defaults come
from its paper preset, see :func:`attrobust.experiments.protocol.eval_defaults`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from .. import data as data_lib
from .. import objectives as objectives_lib
from .._checks import check_finite_floats
from ..attacks.attribution import DISSIMILARITIES
from ..attributions.interop import is_captum
from ..attributions.registry import ATTRIBUTIONS
from ..data import ImageDataset
from .yamlio import (
    apply_overrides,
    deep_merge,
    from_dict,
    load_yaml,
    merge,
    merge_yaml,
    parse_override,
    read_yaml,
    save_yaml,
    to_dict,
)

# the dict/YAML functions of :mod:`.yamlio` are part of this module's public face (``config.from_dict`` etc.);
# the package's ``__all__`` repeats most of these names on purpose (a curated list of names, not logic)
__all__ = [
    "AUTOCAST_CHOICES",
    "DataConfig",
    "EvalConfig",
    "IFIAEvalConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "PGDEvalConfig",
    "SuiteConfig",
    "TrainConfig",
    "apply_overrides",
    "deep_merge",
    "from_dict",
    "load_yaml",
    "merge",
    "merge_yaml",
    "parse_override",
    "read_yaml",
    "save_yaml",
    "to_dict",
]


def _nested(obj: Any, name: str, cls: type) -> None:
    """Allow a nested section to be given as a mapping (``EvalConfig(pgd={"eps": 0.1})``)."""
    value = getattr(obj, name)
    if isinstance(value, dict):
        setattr(obj, name, from_dict(cls, value, prefix=name + "."))
    elif not isinstance(value, cls):
        raise ValueError(f"{name}: expected a {cls.__name__} or a mapping, got {type(value).__name__}")


def _check_min(value: int | float | None, name: str, minimum: float) -> None:
    if value is not None and not value >= minimum:  # also refuses NaN
        raise ValueError(f"{name}: expected a value >= {minimum}, got {value!r}")


BALANCE_KEYS = ("per_class", "rotation", "translate", "distortion", "batch_size")


def _check_balance(options: dict[str, Any] | None) -> None:
    """``data.balance_by_augmentation``: None, or a mapping of :data:`BALANCE_KEYS` with an integer ``per_class``."""
    if options is None:
        return
    name = "data.balance_by_augmentation"
    if not isinstance(options, dict):
        raise ValueError(f"{name}: expected a mapping with per_class (or null), got {options!r}")
    unknown = sorted(set(options) - set(BALANCE_KEYS))
    if unknown:
        raise ValueError(f"{name}: unknown {', '.join(unknown)}; expected keys from: {', '.join(BALANCE_KEYS)}")
    per_class = options.get("per_class")
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"{name}.per_class: expected an integer >= 1, got {per_class!r}")


@dataclass
class DataConfig:
    """Dataset of a run: ``attrobust.data.load(name, split, data_dir, **kwargs)``.

    ``train_subset``/``test_subset`` keep the first n examples of the split (``None``: all). ``test_subset``
    sizes the clean test accuracy reported after training (0 skips it).

    ``balance_by_augmentation`` (a mapping, ``None``: off) balances the training split before training with
    :func:`attrobust.data.balance_by_augmentation`: ``per_class`` (required) examples in every class, the originals
    first and augmented copies (rotation, translation, projection) after them, drawn with the run's ``seed``; the
    other keys (``rotation``, ``translate``, ``distortion``, ``batch_size``) are that function's options. The test
    split is never augmented. (The RAR / ART GTSRB and Flower-17 presets use it.)
    """

    name: str = "mnist"
    data_dir: str | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    balance_by_augmentation: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.name, str):  # one spelling of a registered name: fashion-mnist is stored as fashion_mnist
            self.name = data_lib.canonical_name(self.name)
        _check_min(self.train_subset, "data.train_subset", 1)
        _check_min(self.test_subset, "data.test_subset", 0)
        _check_balance(self.balance_by_augmentation)

    def load(self, split: str, data_dir: str | None = None) -> ImageDataset:
        """``attrobust.data.load(name, split, data_dir or self.data_dir, **kwargs)``; an option the dataset's
        loader does not take raises ``ValueError`` naming ``data.kwargs`` and the options it takes."""
        loader = data_lib.DATASETS.get(self.name)
        params = inspect.signature(loader).parameters
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            options = [k for k in params if k not in ("split", "data_dir")]
            unknown = [k for k in self.kwargs if k not in options]
            if unknown:
                raise ValueError(f"data.kwargs: unknown option {unknown[0]!r} of dataset {self.name!r}; expected "
                                 f"one of: {', '.join(options) or '(none)'}")  # fmt: skip
        return data_lib.load(self.name, split, data_dir or self.data_dir, **self.kwargs)


@dataclass
class ModelConfig:
    """Architecture: ``attrobust.models.create(name, num_classes, in_channels=..., input_size=..., **kwargs)``;
    classes, channels and size come from the dataset."""

    name: str = "small_cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ObjectiveConfig:
    """Training objective: ``attrobust.objectives.create(name, **params)``."""

    name: str = "natural"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.name, str):  # one spelling: trades_igr is stored as trades+igr
            self.name = objectives_lib.canonical_name(self.name)


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    ``schedule`` multiplies ``lr`` by a factor that depends on the training progress ``t`` (see below; the
    trainer applies it before every optimiser step):

    - ``constant``: 1;
    - ``step``: ``gamma ** (t // milestones[0])`` (decay every ``milestones[0]`` units);
    - ``multistep``: the product of the factors of the milestones ``<= t``: ``gamma`` at each one, or with a list
      ``gamma`` (one factor per milestone) ``gamma[i]`` at ``milestones[i]`` (e.g. x0.1, x0.1, x0.5);
    - ``cosine``: ``0.5 * (1 + cos(pi * step / total_steps))``, updated every step.

    ``t`` counts whole epochs (``step // steps_per_epoch``; ``milestone_unit: epoch``) or optimiser steps
    (``milestone_unit: step``, for schedules stated in steps).
    """

    name: Literal["adam", "sgd"] = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    schedule: Literal["constant", "step", "multistep", "cosine"] = "constant"
    milestones: list[float] = field(default_factory=list)
    gamma: float | list[float] = 0.1
    milestone_unit: Literal["epoch", "step"] = "epoch"

    def __post_init__(self) -> None:
        check_finite_floats(self, "optim")
        if not self.lr > 0:
            raise ValueError(f"optim.lr: expected a value > 0, got {self.lr!r}")
        _check_min(self.momentum, "optim.momentum", 0)
        _check_min(self.weight_decay, "optim.weight_decay", 0)
        for factor in self.gamma if isinstance(self.gamma, list) else [self.gamma]:
            _check_min(factor, "optim.gamma", 0)
        if self.schedule == "step" and (len(self.milestones) != 1 or self.milestones[0] <= 0):
            raise ValueError(
                f"optim.milestones: schedule 'step' expects one positive period in epochs, got {self.milestones!r}"
            )
        if self.schedule == "multistep" and not self.milestones:
            raise ValueError("optim.milestones: schedule 'multistep' expects at least one epoch, got []")
        if isinstance(self.gamma, list) and (self.schedule != "multistep" or len(self.gamma) != len(self.milestones)):
            raise ValueError(
                f"optim.gamma: a list of factors needs schedule 'multistep' and one factor per milestone, got "
                f"gamma={self.gamma!r}, milestones={self.milestones!r}, schedule={self.schedule!r}"
            )


# the longest run (directory) name: what ext4, xfs, btrfs, NTFS and APFS allow for one path component
MAX_NAME_BYTES = 255

# Values of ``TrainConfig.autocast`` (None: no autocast; "bf16": torch.autocast with torch.bfloat16).
AUTOCAST_CHOICES = (None, "bf16")


@dataclass
class TrainConfig:
    """A training run. Exactly one of ``epochs`` and ``steps`` sets its length (one step = one batch of
    ``batch_size``; an epoch has ``len(train set) // batch_size`` steps). Results go to ``<out_dir>/<name>/``:
    ``state.pt`` (resumable state every ``checkpoint_every`` steps), ``model.pt`` (final model),
    ``config.yaml``, ``log.jsonl`` (mean loss/acc every ``log_every`` steps).

    ``init`` starts from trained weights instead of a seeded initialisation (fine-tuning): a checkpoint file or a
    run directory holding ``model.pt``; its architecture must be the one this config builds.

    Speed options, off by default (``benchmarks/bench_train_options.py`` measures them side by side):
    ``channels_last`` keeps the model's 4-D weights and every batch in channels-last memory order (the layout
    convolution kernels prefer on recent GPUs); ``autocast: bf16`` runs the objective (forward passes, attacks,
    attributions) under ``torch.autocast`` in bfloat16, with float32 weights, backward pass and optimizer. bf16
    changes the computed numbers (about 3 significant digits), so results are not comparable bit for bit with a
    float32 run of the same config."""

    # at most one of these is set; ``--set steps=N`` clears ``epochs`` and vice versa (see ``apply_overrides``)
    EXCLUSIVE_KEYS: ClassVar[tuple[tuple[str, ...], ...]] = (("epochs", "steps"),)

    name: str
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    epochs: int | None = None
    steps: int | None = None
    batch_size: int = 50
    checkpoint_every: int = 500
    log_every: int = 50
    out_dir: str = "runs"
    device: str = "cpu"
    init: str | None = None
    channels_last: bool = False
    autocast: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.channels_last, bool):
            raise ValueError(f"channels_last: expected true or false, got {self.channels_last!r}")
        if self.autocast not in AUTOCAST_CHOICES:
            choices = " or ".join("null (no autocast)" if k is None else repr(k) for k in AUTOCAST_CHOICES)
            raise ValueError(f"autocast: expected {choices}, got {self.autocast!r}")
        for name, cls in (("data", DataConfig), ("model", ModelConfig), ("objective", ObjectiveConfig),
                          ("optim", OptimConfig)):  # fmt: skip
            _nested(self, name, cls)
        check_finite_floats(self, "")  # every float, the objective's params and the model's kwargs included
        if not self.name or any(c in self.name for c in "/\\") or self.name in (".", ".."):
            raise ValueError(f"name: expected a non-empty run name without path separators, got {self.name!r}")
        if len(self.name.encode("utf-8")) > MAX_NAME_BYTES:
            raise ValueError(
                f"name: expected a run name of at most {MAX_NAME_BYTES} bytes (the longest directory name file "
                f"systems allow), got {len(self.name.encode('utf-8'))} bytes: {self.name[:40]!r}..."
            )
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(
                f"epochs/steps: expected exactly one of them to be set, got epochs={self.epochs!r}, "
                f"steps={self.steps!r}"
            )
        _check_min(self.epochs, "epochs", 1)
        _check_min(self.steps, "steps", 1)
        _check_min(self.batch_size, "batch_size", 1)
        _check_min(self.checkpoint_every, "checkpoint_every", 1)
        _check_min(self.log_every, "log_every", 1)


@dataclass
class PGDEvalConfig:
    """PGD l_inf attack on the prediction (random start, CE loss); budgets in pixel units. ``eps`` and
    ``step_size`` have no default (None): they come from the dataset's preset or must be given."""

    eps: float | None = None
    step_size: float | None = None
    steps: int = 100
    random_start: bool = True

    def __post_init__(self) -> None:
        _check_min(self.eps, "pgd.eps", 0)
        _check_min(self.step_size, "pgd.step_size", 0)
        _check_min(self.steps, "pgd.steps", 1)  # 0 steps would report accuracy at the start point as PGD accuracy
        if self.step_size == 0 and self.eps:  # the random start alone: accuracy under noise, not under attack
            raise ValueError(f"pgd.step_size: expected a value > 0 with pgd.eps {self.eps}, got 0")


@dataclass
class IFIAEvalConfig:
    """IFIA attack on the attribution (Ghorbani et al. 2019) as evaluated in the RAR paper: top-k
    dissimilarity, best of ``restarts`` runs by ``select_by``; ``beta`` is the softplus surrogate's sharpness
    (the RAR code used ``tf.nn.softplus``, beta 1); ``ig_steps`` the IG path points. ``random_start`` starts
    every run from a uniform point of the eps ball instead of the clean image (Ghorbani et al. start from the
    clean image; for the runs after the first see ``restart_from``). From the clean image the top-k objective can
    have a zero gradient: IG with a black baseline is zero on black pixels, ``|.|`` has zero slope there, and a
    digit with at most ``k`` lit pixels keeps all its map mass inside the top-k, so the attack never moves.
    ``restart_from``: where the runs after the first start, ``"random"`` (a uniform point of the eps ball, the
    default) or ``"clean"`` (the clean image again, the RAR paper's three runs, which differ only by GPU
    non-determinism). ``eval_k``: the size of the reported top-k intersection (None: the attack's ``k``; RAR
    attacks MNIST with k 200 and reports the top-100 intersection); ``select_by: topk`` selects by the attack's
    ``k``, as the RAR reference code does. ``k``, ``eps`` and ``step_size`` have no default (None): they come from
    the dataset's preset or must be given."""

    attribution: str = "ig"
    dissimilarity: str = "topk"
    k: int | None = None
    eps: float | None = None
    step_size: float | None = None
    steps: int = 100
    beta: float | None = 1.0
    ig_steps: int = 100
    restarts: int = 3
    select_by: Literal["kendall", "topk"] = "kendall"
    random_start: bool = False
    restart_from: Literal["random", "clean"] = "random"
    eval_k: int | None = None

    @property
    def reported_k(self) -> int | None:
        """The k of the reported top-k intersection: ``eval_k``, or the attack's ``k`` when unset."""
        return self.k if self.eval_k is None else self.eval_k

    def __post_init__(self) -> None:
        _check_min(self.k, "ifia.k", 1)
        _check_min(self.eval_k, "ifia.eval_k", 1)
        if self.restart_from not in ("random", "clean"):
            raise ValueError(f"ifia.restart_from: expected one of 'random', 'clean', got {self.restart_from!r}")
        _check_min(self.eps, "ifia.eps", 0)
        _check_min(self.step_size, "ifia.step_size", 0)
        _check_min(self.steps, "ifia.steps", 1)
        _check_min(self.ig_steps, "ifia.ig_steps", 1)
        _check_min(self.restarts, "ifia.restarts", 1)
        if self.beta is not None and not self.beta > 0:
            raise ValueError(f"ifia.beta: expected a value > 0 or null, got {self.beta!r}")
        _check_attribution(self.attribution)
        if self.dissimilarity not in DISSIMILARITIES:
            expected = ", ".join(map(repr, DISSIMILARITIES))
            raise ValueError(f"ifia.dissimilarity: expected one of {expected}, got {self.dissimilarity!r}")


def _check_attribution(name: Any) -> None:
    """``ifia.attribution`` names a registered method; in Python a Captum method or a callable may stand there for
    the suite's metrics (:func:`attrobust.attributions.explainer` resolves it), but not in a stored evaluation
    (:func:`.protocol.describe` refuses it: the protocol names its method)."""
    if isinstance(name, str):
        if name not in ATTRIBUTIONS.names():
            raise ValueError(f"ifia.attribution: expected one of {', '.join(ATTRIBUTIONS.names())}, got {name!r}")
    elif not (callable(name) or is_captum(name)):
        raise ValueError(
            f"ifia.attribution: expected the name of a registered attribution ({', '.join(ATTRIBUTIONS.names())}), "
            f"a Captum method or a callable, got {name!r}"
        )


@dataclass
class SuiteConfig:
    """Settings of the extra metrics (``EvalConfig.metrics``; see :mod:`attrobust.experiments.suite`).

    ``stability_samples`` neighbours uniform in an l_inf ball of ``stability_noise`` for RIS/ROS/RRS (the
    smoothing paper's appendix I.2); ``road_fractions`` of pixels removed by ROAD and ``road_output``, what its
    curve records (``accuracy``: Rong et al.'s curves; ``probability``: the softmax probability of the label, the
    smoothing paper's ROAD_AUC, section 4.1); ``ssim_sigmas``: Gaussian
    input-noise levels of the SSIM-under-noise curve; ``corruption_severity`` (1-5) of the corruptions;
    ``bound_attribution`` (``saliency``, ``input_x_gradient``, ``integrated_gradients``) whose deviation the upper
    bounds cover, on a Softplus(``ifia.beta``) copy (``bound_beta`` when ``ifia.beta`` is unset)."""

    stability_samples: int = 10
    stability_noise: float = 0.05
    road_fractions: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    road_output: Literal["accuracy", "probability"] = "accuracy"
    ssim_sigmas: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3])
    corruption_severity: int = 3
    bound_attribution: str = "saliency"
    bound_beta: float = 10.0

    def __post_init__(self) -> None:
        _check_min(self.stability_samples, "suite.stability_samples", 1)
        _check_min(self.corruption_severity, "suite.corruption_severity", 1)
        if self.corruption_severity > 5:
            raise ValueError(f"suite.corruption_severity: expected 1..5, got {self.corruption_severity}")
        if not self.road_fractions or not all(0 <= f < 1 for f in self.road_fractions):
            raise ValueError(f"suite.road_fractions: expected fractions in [0, 1), got {self.road_fractions!r}")
        if self.road_output not in ("accuracy", "probability"):
            raise ValueError(f"suite.road_output: expected 'accuracy' or 'probability', got {self.road_output!r}")


@dataclass
class EvalConfig:
    """An evaluation: ``n`` test samples (``sample="first"``: the first n, as the papers' code; ``"seeded"``: a
    random n drawn with ``seed``; ``"seeded_correct"``: a random n of the images the model classifies correctly,
    drawn with ``seed`` (:mod:`.sampling`; needs ``skip_pgd``, and no natural accuracy is reported); ``n=None``:
    the whole split), natural accuracy, PGD accuracy and IFIA
    top-k/Kendall on the correctly classified ones. ``dataset=None`` uses the checkpoint's training dataset.
    The class itself states no attack budget; :func:`attrobust.experiments.protocol.eval_defaults` gives a
    dataset's paper protocol. ``metrics`` adds metrics of the suite by name (``["all"]``: every one that
    applies), set up by ``suite``."""

    n: int | None = 100
    sample: Literal["first", "seeded", "seeded_correct"] = "first"
    seed: int = 0
    batch_size: int = 100
    dataset: str | None = None
    data_dir: str | None = None
    split: str = "test"
    device: str = "cpu"
    pgd: PGDEvalConfig = field(default_factory=PGDEvalConfig)
    ifia: IFIAEvalConfig = field(default_factory=IFIAEvalConfig)
    skip_pgd: bool = False
    skip_ifia: bool = False
    metrics: list[str] = field(default_factory=list)
    suite: SuiteConfig = field(default_factory=SuiteConfig)
    examples: int = 4  # saliency examples stored for the report's grid (experiments.examples); 0 stores none

    def __post_init__(self) -> None:
        if isinstance(self.dataset, str):
            self.dataset = data_lib.canonical_name(self.dataset)
        _nested(self, "pgd", PGDEvalConfig)
        _nested(self, "ifia", IFIAEvalConfig)
        _nested(self, "suite", SuiteConfig)
        _check_min(self.n, "n", 1)
        if self.sample == "seeded_correct" and not self.skip_pgd:  # accuracy on correct images means something else
            raise ValueError(
                "skip_pgd: expected true with sample 'seeded_correct' (only correctly classified images are "
                "evaluated, so PGD accuracy there is not the model's robust accuracy), got false"
            )
        _check_min(self.examples, "examples", 0)
        _check_min(self.batch_size, "batch_size", 1)
        check_finite_floats(self, "")
