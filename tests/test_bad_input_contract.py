"""The bad-input contract: every registered attribution, attack, metric and objective, called with each input of a
matrix of bad inputs, raises ``ValueError`` or ``TypeError`` whose message says what was "expected".

Every registered name is covered automatically: its kind (the registry it is in, or its metric kind) says which
inputs it takes and which bad inputs apply; ``CALLS`` gives each name its (cheap) options, and a registered name
without an entry fails ``test_every_registered_name_has_a_call``. ``NOT_APPLICABLE`` says, per kind, which cases
do not apply and why. The public measures outside the registries (ROAD, deletion, insertion, the bounds) are
listed in ``UNREGISTERED``. Every call is first made with good inputs, so a refusal comes from the bad input.
"""

import inspect
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from attrobust import metrics, objectives
from attrobust.attacks import ATTACKS
from attrobust.attributions import ATTRIBUTIONS
from attrobust.metrics import METRIC_KINDS, METRICS
from attrobust.objectives import OBJECTIVES

N, K, S = 3, 5, 8  # batch, classes, image side

CASES = (
    "nan", "inf", "out_of_range", "uint8", "wrong_rank", "wrong_channels", "wrong_spatial_size", "empty_batch",
    "labels_dtype", "labels_length", "labels_range", "meta_device", "float64",
)  # fmt: skip

LABELS = ("labels_dtype", "labels_length", "labels_range")
NO_LABELS = dict.fromkeys(LABELS, "takes no labels")

# kind -> {case: why it does not apply}; every other case applies and must be refused.
NOT_APPLICABLE: dict[str, dict[str, str]] = {
    "model": {},  # attributions, attacks, objectives and the model metrics: (model, x, y), every case applies
    "model_pair": {**NO_LABELS, "wrong_channels": "x_adv is checked against x (see wrong_spatial_size)"},
    "pair": {
        **NO_LABELS,
        "out_of_range": "maps are any real values, not pixels",
        "uint8": "integer maps are ranked as well (values are only compared)",
        "float64": "maps of any floating dtype are measured (float64 gives a float64 result)",
    },
    "map": {
        **NO_LABELS,
        "out_of_range": "maps are any real values, not pixels",
        "wrong_channels": "one input: no second map to disagree with",
        "wrong_spatial_size": "one input: no second map to disagree with",
        "float64": "maps of any floating dtype are measured",
    },
    "values": {
        **NO_LABELS,
        "out_of_range": "measurements are any real values",
        "uint8": "integer measurements are compared as well",
        "wrong_channels": "values (N, M) have no channels (wrong_spatial_size: another M)",
        "float64": "any real dtype is compared",
    },
    "logits": {
        "out_of_range": "logits are any real values",
        "wrong_channels": "logits (N, K) have no channels",
        "wrong_spatial_size": "logits (N, K) have no spatial size",
        "float64": "logits of any floating dtype are measured",
    },
    "boxes": {
        **NO_LABELS,
        "out_of_range": "box corners are pixel indices, any size",
        "uint8": "integer box corners are boxes as well",
        "wrong_channels": "boxes (N, 4) have no channels",
        "float64": "boxes of any dtype are measured",
    },
}
NOT_APPLICABLE["boxes_top1"] = {k: v for k, v in NOT_APPLICABLE["boxes"].items() if k not in LABELS}


class StrictGapCNN(nn.Sequential):
    """A tiny ReLU CNN for ``(N, 1, 8, 8)`` images only (the flatten/unflatten front refuses other shapes, as a
    model with a linear layer would), with a global-average-pool + linear head (so CAM applies), in eval mode."""

    def __init__(self) -> None:
        torch.manual_seed(0)
        super().__init__(
            nn.Flatten(), nn.Unflatten(1, (1, S, S)),
            nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, K),
        )  # fmt: skip
        self.eval()


def _images() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.rand(N, 1, S, S, generator=g) * 0.8 + 0.1, torch.tensor([0, 2, 4])


def _bad_x_y(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``x`` and labels ``y`` for a model taking ``(N, 1, 8, 8)`` images and ``K`` classes, one case bad."""
    x, y = _images()
    if case in ("nan", "inf"):
        x[0, 0, 1, 1] = float(case)
    changed = {
        "out_of_range": lambda: (x * 2, y),
        "uint8": lambda: ((x * 255).to(torch.uint8), y),
        "wrong_rank": lambda: (x[:, 0], y),
        "wrong_channels": lambda: (x.expand(-1, 3, -1, -1).contiguous(), y),
        "wrong_spatial_size": lambda: (torch.rand(N, 1, S + 2, S + 2), y),
        "empty_batch": lambda: (x[:0], y[:0]),
        "labels_dtype": lambda: (x, y.to(torch.int32)),
        "labels_length": lambda: (x, y[:2]),
        "labels_range": lambda: (x, torch.tensor([0, 2, K])),
        "meta_device": lambda: (x.to("meta"), y),
        "float64": lambda: (x.double(), y),
    }
    return changed[case]() if case in changed else (x, y)


def _bad_pair(case: str, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two maps ``a, b`` (same shape, dim 1 = channels for 4-dim maps) with one case bad."""
    a, b = a.clone(), b.clone()
    if case in ("nan", "inf"):
        a.view(-1)[3] = float(case)
    changed = {
        "uint8": lambda: ((a * 255).to(torch.uint8), (b * 255).to(torch.uint8)),
        "wrong_rank": lambda: (a.view(1, 1, 1, *a.shape), b.view(1, 1, 1, *b.shape)),
        "wrong_channels": lambda: (a, torch.cat([b, b], 1)),
        "wrong_spatial_size": lambda: (a, torch.cat([b, b], -1)),
        "empty_batch": lambda: (a[:0], b[:0]),
        "meta_device": lambda: (a.to("meta"), b.to("meta")),
    }
    return changed[case]() if case in changed else (a, b)


def _bad_labels(case: str, y: torch.Tensor) -> torch.Tensor:
    changed = {
        "labels_dtype": lambda: y.to(torch.int32),
        "labels_length": lambda: y[:2],
        "labels_range": lambda: torch.tensor([0, 2, K]),
        "empty_batch": lambda: y[:0],
    }
    return changed[case]() if case in changed else y


def _bad_boxes_logits(case: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Predicted and ground-truth boxes ``(N, 4)``, logits ``(N, K)`` and labels ``(N,)``, one case bad."""
    pred = torch.tensor([[0.0, 0, 4, 4], [1, 1, 5, 6], [2, 0, 3, 3]])
    gt = torch.tensor([[0.0, 0, 4, 5], [0, 0, 2, 2], [2, 0, 3, 3]])
    logits = torch.randn(N, K, generator=torch.Generator().manual_seed(3))
    y = _images()[1]
    if case in ("nan", "inf"):
        pred[1, 2] = float(case)
    if case == "wrong_rank":
        pred, gt = pred[None], gt[None]
    if case == "wrong_spatial_size":
        pred, gt = pred[:, :3], gt[:, :3]
    if case == "empty_batch":
        pred, gt, logits = pred[:0], gt[:0], logits[:0]
    if case == "meta_device":
        pred, gt = pred.to("meta"), gt.to("meta")
    return pred, gt, logits, _bad_labels(case, y)


def _bad_logits(case: str) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.randn(N, K, generator=torch.Generator().manual_seed(3))
    if case in ("nan", "inf"):
        logits[1, 2] = float(case)
    changed = {
        "uint8": lambda: (logits.abs() * 50).to(torch.uint8),
        "wrong_rank": lambda: logits[None],
        "empty_batch": lambda: logits[:0],
        "meta_device": lambda: logits.to("meta"),
    }
    if case in changed:
        logits = changed[case]()
    return logits, _bad_labels(case, _images()[1])


def _maps(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    shape = {"pair": (N, 2, S, S), "map": (N, 2, S, S), "values": (N, 7)}[kind]
    return torch.rand(shape, generator=g), torch.rand(shape, generator=g)


def _inputs(kind: str, case: str) -> tuple[Any, ...]:
    """The positional inputs of a callable of ``kind`` with ``case`` bad (``case="good"``: all good)."""
    if kind == "model":
        return (StrictGapCNN(), *_bad_x_y(case))
    if kind == "model_pair":
        x, _ = _images()
        x_adv, _ = _bad_x_y(case)
        return StrictGapCNN(), (x[:0] if case == "empty_batch" else x), x_adv
    if kind in ("pair", "map", "values"):
        a, b = _bad_pair(case, *_maps(kind))
        if kind == "values" and case == "wrong_rank":
            a, b = a[:, :, None], b[:, :, None]
        return (a,) if kind == "map" else (a, b)
    if kind == "logits":
        return _bad_logits(case)
    pred, gt, logits, y = _bad_boxes_logits(case)
    return (pred, gt) if kind == "boxes" else (pred, gt, logits, y)


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


ATTRIBUTION_OPTIONS: dict[str, dict[str, Any]] = {
    "saliency": {}, "input_x_gradient": {}, "integrated_gradients": {"steps": 2}, "ig": {"steps": 2},
    "smoothgrad": {"n": 2}, "gradient_shap": {"n": 2}, "cam": {}, "grad_cam": {}, "grad_cam_pp": {},
    "layer_integrated_gradients": {"layer": "4", "steps": 2},
}  # fmt: skip
ATTACK_OPTIONS: dict[str, dict[str, Any]] = {
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 1},
    "fgsm": {"eps": 0.1},
    "cw_linf": {"eps": 0.1, "step_size": 0.05, "steps": 1},
    "spsa": {"eps": 0.1, "steps": 1, "n_samples": 2},
    "transfer": {"eps": 0.1, "step_size": 0.05, "steps": 1},
    "ifia": {"k": 4, "eps": 0.1, "step_size": 0.05, "steps": 1, "beta": 5.0, "ig_steps": 2},
    "targeted_manipulation": {"steps": 1, "k": 4, "eps": 0.1},
}
BUDGET = {"eps": 0.1, "step_size": 0.05, "steps": 1}
OBJECTIVE_PARAMS: dict[str, dict[str, Any]] = {
    "natural": {}, "pgd_at": BUDGET, "trades": BUDGET, "mart": BUDGET, "art": BUDGET,
    "ig_norm": {**BUDGET, "ig_steps": 2, "attack_ig_steps": 2}, "ig_sum_norm": {**BUDGET, "ig_steps": 2},
    "igr": {**BUDGET, "ig_steps": 2}, "pgd_at+igr": {**BUDGET, "ig_steps": 2}, "trades+igr": {**BUDGET, "ig_steps": 2},
    "mart+igr": {**BUDGET, "ig_steps": 2}, "adv_aat": {**BUDGET, "ig_steps": 2, "attack_ig_steps": 2},
    "ssr": {"power_iters": 1}, "input_gradient_reg": {},
}  # fmt: skip
METRIC_OPTIONS: dict[str, dict[str, Any]] = {
    "topk_intersection": {"k": 4}, "kendall_tau": {}, "spearman": {}, "cosine": {}, "pearson": {},
    "ssim": {"win_size": 3}, "gini": {}, "goodman_kruskal_gamma": {}, "accuracy": {},
    "corruption_accuracy": {"transforms": {"identity": lambda t: t}},
    "ris": {"explain": "saliency", "n_samples": 2}, "ros": {"explain": "saliency", "n_samples": 2},
    "rrs": {"explain": "saliency", "n_samples": 2, "layer": "4"}, "image_gradient_alignment": {},
    "activation_consistency": {}, "box_iou": {}, "gt_known_loc": {}, "top1_loc": {},
}  # fmt: skip


def _with_maps(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(model, x, y, maps, ...)`` called as ``(model, x, y, ...)``: the maps, a fixed ramp of ``x``'s shape and
    device, follow ``x`` so the bad input is the image's (a map that disagrees with ``x`` is another case)."""

    def call(model: nn.Module, x: torch.Tensor, y: torch.Tensor, **options: Any) -> Any:
        maps = torch.arange(x.numel(), dtype=torch.float32, device=x.device).reshape(x.shape)
        return fn(model, x, y, maps, **options)

    return call


# the public measures outside the METRICS registry (they take the model and more than one map or a budget), with
# the options of a cheap call; every case of the "model" kind applies to them
UNREGISTERED: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "road": (_with_maps(metrics.road), {"fractions": [0.2, 0.5]}),
    "deletion": (_with_maps(metrics.deletion), {"fractions": [0.0, 0.5, 1.0]}),
    "insertion": (_with_maps(metrics.insertion), {"fractions": [0.0, 0.5, 1.0]}),
    **{name: (getattr(metrics, name), {"eps": 0.1, "beta": 5.0, "iters": 2})
       for name in ("euclidean_bound", "modified_euclidean_bound", "cosine_bound")},
    "linf_bound": (metrics.linf_bound, {"eps": 0.1, "beta": 5.0}),
}  # fmt: skip


def _registered() -> dict[str, tuple[str, Callable[..., Any] | None, dict[str, Any] | None]]:
    """Every registered name as ``"<registry>:<name>" -> (kind, function, options)`` (options None: no entry)."""
    out: dict[str, tuple[str, Callable[..., Any] | None, dict[str, Any] | None]] = {}
    for name in ATTRIBUTIONS.names():
        out[f"attribution:{name}"] = ("model", ATTRIBUTIONS.get(name), ATTRIBUTION_OPTIONS.get(name))
    for name in ATTACKS.names():
        out[f"attack:{name}"] = ("model", ATTACKS.get(name), ATTACK_OPTIONS.get(name))
    # transfer(source_model, target_model, x, y): the bad inputs go with the target model; the source is good.
    transfer = ATTACKS.get("transfer")
    options = out["attack:transfer"][2]
    out["attack:transfer"] = ("model", lambda m, x, y, **kw: transfer(StrictGapCNN(), m, x, y, **kw), options)
    for name in OBJECTIVES.names():
        params = OBJECTIVE_PARAMS.get(name)
        out[f"objective:{name}"] = ("model", None if params is None else objectives.create(name, **params), {})
    for name in METRICS.names():
        out[f"metric:{name}"] = (METRIC_KINDS[name], METRICS.get(name), METRIC_OPTIONS.get(name))
    for name, (fn, options) in UNREGISTERED.items():
        out[f"measure:{name}"] = ("model", fn, options)
    return out


def _with_generator(fn: Callable[..., Any], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` plus a fresh seeded generator for functions that take one (same draws on every call)."""
    try:
        takes = "generator" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    return {**options, "generator": _gen()} if takes else options


def test_every_registered_name_has_a_call():
    missing = [key for key, (_, _, options) in _registered().items() if options is None]
    assert not missing, f"add options for {missing} to the tables of this test"


def test_every_kind_has_a_row_in_the_table():
    kinds = {kind for kind, _, _ in _registered().values()}
    assert kinds <= set(NOT_APPLICABLE)
    for kind, cases in NOT_APPLICABLE.items():
        assert set(cases) <= set(CASES), kind


REGISTERED = sorted(_registered())


@pytest.mark.parametrize("key", REGISTERED)
def test_good_inputs_are_accepted(key):
    kind, fn, options = _registered()[key]
    fn(*_inputs(kind, "good"), **_with_generator(fn, options))


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("key", REGISTERED)
def test_bad_input_is_refused_naming_what_was_expected(key, case):
    kind, fn, options = _registered()[key]
    if case in NOT_APPLICABLE[kind]:
        pytest.skip(f"{kind}: {NOT_APPLICABLE[kind][case]}")
    with pytest.raises((ValueError, TypeError), match="expected"):
        fn(*_inputs(kind, case), **_with_generator(fn, options))
