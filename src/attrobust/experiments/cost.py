"""What a preset run costs before it runs: passes counted from its protocol, times the model's measured size.

The unit is one *pass*: a forward and a backward pass of one image through the model, about ``3 * MACs``
multiply-accumulates, ``MACs`` being the forward pass's multiply-accumulates of the convolutions and linear
layers, counted by :func:`forward_macs` on a model built on the ``meta`` device (shapes only: no weights, no
data). A forward pass alone counts 1/3; a pass that differentiates through an attribution built with
``create_graph=True`` (a double backward) counts 2.

Passes per image come from the protocol (:func:`train_passes`, :func:`eval_passes`): an attack of ``s`` steps
costs ``s`` passes, integrated gradients of ``m`` points ``m`` passes (``2 m`` when differentiated), SmoothGrad
its ``n = 50`` noisy copies, a training step one pass plus its objective's inner work; the formulas are written
next to each objective below. Training images are ``steps * batch_size`` (an epoch has ``len(train) //
batch_size`` steps, :data:`DATASETS` giving the standard split sizes), evaluated images ``n`` (or the whole test
split).

Time = FLOPs (``2 * 3 * MACs`` per pass) / :data:`ASSUMED_TFLOPS`, an effective throughput per device type
(measured on this project's CPU, stated for a GPU): an estimate of the order of magnitude at full use of one
device. Small models (the MNIST networks) keep a GPU far below it, so their real time is longer; the pass counts
and FLOPs are exact counts of the protocol, the hours are not.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import models as models_lib
from ..metrics.faithfulness import CURVE_FRACTIONS
from .config import EvalConfig, TrainConfig, to_dict

# (train images, test images, classes, channels, side) of the standard splits the loaders read; Flower-17's
# training split is its 72 images per class under split_set "random" (RAR / ART), else the official trn + val
DATASETS: dict[str, tuple[int, int, int, int, int]] = {
    "mnist": (60_000, 10_000, 10, 1, 28),
    "fashion_mnist": (60_000, 10_000, 10, 1, 28),
    "cifar10": (50_000, 10_000, 10, 3, 32),
    "svhn": (73_257, 26_032, 10, 3, 32),
    "gtsrb": (39_209, 12_630, 43, 3, 32),
    "flower17": (1_020, 340, 17, 3, 128),
    "imagenette": (9_469, 3_925, 10, 3, 224),
}
# effective throughput assumed for the time estimate (TFLOP/s, float32 training on one device). cpu: measured on
# this project's 2-core machine, small_cnn on 64 MNIST images (README, Performance: natural 12.0 ms and PGD-AT with 5
# steps 69.4 ms a step = 64 x 1 and 64 x 6 passes of 2.84 MMAC x 6: 0.091 and 0.094); cuda: stated, about a third
# of a current data-centre GPU's float32 peak, not measured
ASSUMED_TFLOPS = {"cuda": 20.0, "cpu": 0.09}
SMOOTHGRAD_SAMPLES = 50  # attrobust.attributions.smoothgrad's default n
FORWARD = 1 / 3  # a forward pass alone, in passes
DOUBLE = 2  # a pass differentiated through an attribution built with create_graph


@dataclass(frozen=True)
class Shape:
    """The data of a run as the cost sees it: split sizes, classes and the image shape ``(C, H, W)``."""

    train: int
    test: int
    classes: int
    channels: int
    side: int


def data_shape(data: Mapping[str, Any]) -> Shape:
    """:class:`Shape` of a ``data`` section (``TrainConfig.data`` as a dict): the standard split sizes, cut by
    ``train_subset``, grown by ``balance_by_augmentation`` and resized by ``kwargs.size``; ``ValueError`` for a
    dataset without known sizes."""
    name = data.get("name")
    if name not in DATASETS:
        raise ValueError(f"data.name: expected one of {', '.join(DATASETS)} for a cost estimate, got {name!r}")
    train, test, classes, channels, side = DATASETS[name]
    kwargs = data.get("kwargs") or {}
    if name == "flower17" and kwargs.get("split_set") == "random":
        per_class = int(kwargs.get("test_per_class", 8))
        train, test = (80 - per_class) * classes, per_class * classes
    size = kwargs.get("size", side)
    side = int(size if isinstance(size, int) else max(size))
    if data.get("train_subset") is not None:
        train = min(train, int(data["train_subset"]))
    balance = data.get("balance_by_augmentation") or {}
    if balance:
        train = max(train, int(balance["per_class"]) * classes)
    return Shape(train, test, classes, channels, side)


_MACS: dict[str, int] = {}


def forward_macs(config: TrainConfig, shape: Shape) -> int:
    """Multiply-accumulates of one image's forward pass (convolutions and linear layers) of the run's model,
    built on the ``meta`` device (cached per architecture and input)."""
    key = repr((config.model.name, sorted(config.model.kwargs.items()), shape.classes, shape.channels, shape.side))
    if key not in _MACS:
        total = [0]

        def count(module: nn.Module, _: Any, out: torch.Tensor) -> None:
            if isinstance(module, nn.Conv2d):
                k = module.kernel_size[0] * module.kernel_size[1]
                total[0] += out.numel() * module.in_channels // module.groups * k
            elif isinstance(module, nn.Linear):
                total[0] += out.numel() * module.in_features

        for device in ("meta", "cpu"):  # shapes only; a block that reads values (e.g. a median) needs the CPU
            total[0] = 0
            try:
                _forward(config, shape, device, count)
                break
            except (RuntimeError, NotImplementedError):
                if device == "cpu":
                    raise
        _MACS[key] = total[0]
    return _MACS[key]


def _forward(config: TrainConfig, shape: Shape, device: str, hook: Any) -> None:
    """One forward pass of an image through the run's model built on ``device``, ``hook`` on every module; the
    global RNG is left as it was (the CPU build draws initial weights)."""
    with torch.random.fork_rng(devices=[]), torch.device(device), torch.no_grad():
        model = models_lib.create(config.model.name, shape.classes, in_channels=shape.channels,
                                  input_size=shape.side, **config.model.kwargs)  # fmt: skip
        for module in model.modules():
            module.register_forward_hook(hook)
        model.eval()(torch.zeros(1, shape.channels, shape.side, shape.side))


def train_passes(name: str, params: Mapping[str, Any]) -> float:
    """Passes per training image of objective ``name`` with ``params`` (its preset's ``objective.params``)."""
    steps = int(params.get("steps", 0))
    if name.endswith("+igr"):  # the base, then IG of x and of x~ with create_graph, differentiated
        return train_passes(name[: -len("+igr")], params) + 2 * DOUBLE * int(params.get("ig_steps", 10))
    if name in ("ig_norm", "ig_sum_norm", "adv_aat"):  # the inner attack differentiates IG of attack_ig_steps
        inner = steps * DOUBLE * int(params.get("attack_ig_steps", 5))
        return 1 + inner + (2 if name == "adv_aat" else 1) * DOUBLE * int(params.get("ig_steps", 10))
    per_name = {
        "natural": 1,
        "pgd_at": 1 + steps,
        "trades": 2 + steps,  # clean and adversarial terms, the KL attack
        "mart": 2 + steps,
        "art": 1 + 2 * DOUBLE * (steps + 1),  # gradient maps of the true and runner-up class at every step
        "ssr": 1 + DOUBLE * (1 + int(params.get("power_iters", 10))),  # Hessian-vector products
        "input_gradient_reg": 1 + DOUBLE,
    }
    if name not in per_name:
        raise ValueError(f"objective.name: no cost formula for {name!r}; expected one of {', '.join(per_name)}")
    return per_name[name]


def _map_passes(config: EvalConfig) -> float:
    """Passes of one attribution map of the evaluation's attribution (saliency 1, IG its points, SmoothGrad 50)."""
    name = config.ifia.attribution
    if name in ("ig", "integrated_gradients"):
        return config.ifia.ig_steps
    return SMOOTHGRAD_SAMPLES if name == "smoothgrad" else 1


def eval_passes(config: EvalConfig) -> float:
    """Passes per evaluated image: the natural forward, PGD, IFIA (every restart, every step: IG of the surrogate
    differentiated and the original's map to score it) and the suite metrics on the clean image."""
    total = FORWARD
    if not config.skip_pgd:
        total += config.pgd.steps
    suite, maps = config.suite, _map_passes(config)
    if not config.skip_ifia:  # the attacked map's passes: IG its points, saliency 1 (ig_steps unused), SmoothGrad 50
        total += config.ifia.restarts * config.ifia.steps * (DOUBLE + 1) * maps
    metrics = set(config.metrics)
    per_metric = {
        "gini": maps,
        "ris": suite.stability_samples * (maps + FORWARD),
        "ros": suite.stability_samples * (maps + FORWARD),
        "rrs": suite.stability_samples * (maps + FORWARD),
        "road": len(suite.road_fractions) * FORWARD,
        "deletion": len(CURVE_FRACTIONS) * FORWARD,
        "insertion": len(CURVE_FRACTIONS) * FORWARD,
        "ssim_noise": len(suite.ssim_sigmas) * maps,
    }
    total += sum(v for k, v in per_metric.items() if k in metrics)
    # the bounds run power iterations of the attribution Jacobian (about 20 double-backward IG maps each)
    total += sum(20 * DOUBLE * maps for k in metrics if k.endswith("_bound"))
    return total


@dataclass(frozen=True)
class Estimate:
    """A run's cost: images, passes per image, passes, MACs of one forward pass, FLOPs and hours."""

    images: int
    per_image: float
    passes: float
    macs: int
    flops: float
    hours: float

    def line(self) -> str:
        head = f"{self.images:,} images x {self.per_image:,.1f} passes = {self.passes:.3g} passes"
        return f"{head} x {self.macs / 1e6:,.1f} MMAC x 6 = {self.flops / 1e15:.3g} PFLOP, about {_hours(self.hours)}"


def _hours(hours: float) -> str:
    return f"{hours * 60:.1f} min" if hours < 1 else f"{hours:,.1f} h"


def _estimate(images: int, per_image: float, macs: int, device: str) -> Estimate:
    passes = images * per_image
    flops = passes * 6.0 * macs
    tflops = ASSUMED_TFLOPS["cuda" if device.startswith("cuda") else "cpu"]
    return Estimate(images, per_image, passes, macs, flops, flops / (tflops * 1e12) / 3600)


def training(config: TrainConfig, device: str) -> Estimate:
    """The cost of training ``config`` on ``device`` (``"cuda"`` or ``"cpu"``: which throughput is assumed)."""
    shape = data_shape(to_dict(config)["data"])
    steps = config.steps if config.steps is not None else config.epochs * (shape.train // config.batch_size)
    per_image = train_passes(config.objective.name, config.objective.params)
    return _estimate(steps * config.batch_size, per_image, forward_macs(config, shape), device)


def evaluation(eval_cfg: EvalConfig, config: TrainConfig, device: str) -> Estimate:
    """The cost of evaluating the model of ``config`` with ``eval_cfg`` (its ``n``, or the whole test split)."""
    shape = data_shape(to_dict(config)["data"])
    images = shape.test if eval_cfg.n is None else min(eval_cfg.n, shape.test)
    return _estimate(images, eval_passes(eval_cfg), forward_macs(config, shape), device)


def total_hours(estimates: list[Estimate]) -> float:
    """The hours of several estimates together (``math.fsum``)."""
    return math.fsum(e.hours for e in estimates)
