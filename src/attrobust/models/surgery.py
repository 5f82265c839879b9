"""Module-tree surgery: softplus copies and feature-map smoothing blocks.

ReLU networks have zero second derivatives almost everywhere, so methods that differentiate an attribution
(IFIA, IG-NORM, ART, IGR) use a copy of the model whose ReLUs are replaced by ``Softplus(beta)``; as ``beta``
grows the copy converges to the ReLU model. :func:`softplus` keeps the original parameters.

:func:`insert_smoothing` adds a :class:`~attrobust.models.smoothing.SmoothingBlock` after a named layer of a
model built by :func:`attrobust.models.create` and records it in ``model.spec["smoothing"]`` so that
``create(**model.spec)`` (and therefore checkpoints) rebuild it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from attrobust._checks import check_positive
from attrobust.models.smoothing import SmoothingBlock


def _shallow(module: nn.Module) -> nn.Module:
    """Copy ``module`` with fresh bookkeeping containers but the same parameter and buffer tensors."""
    new = copy.copy(module)
    for key, value in vars(module).items():
        if key == "spec":
            new.__dict__[key] = copy.deepcopy(value)
        elif isinstance(value, (dict, set)):
            new.__dict__[key] = copy.copy(value)
    return new


def _swap(module: nn.Module, beta: float) -> nn.Module:
    if isinstance(module, nn.ReLU):
        smooth = nn.Softplus(beta=beta)
        smooth.train(module.training)
        return smooth
    new = _shallow(module)
    new._modules = {name: None if child is None else _swap(child, beta) for name, child in module._modules.items()}
    return new


def softplus(model: nn.Module, beta: float) -> nn.Module:
    """Return a copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta=beta)``.

    The copy is a new module tree that *shares* every parameter and buffer (the same tensor objects) with
    ``model``: training or loading weights into the original is seen by the copy, and batch-norm running
    statistics are shared. Module containers (children, hooks, ``spec``) are the copy's own, so editing the copy's
    structure leaves ``model`` untouched. ``model`` itself is not modified.

    The train/eval mode of every module is copied at call time; afterwards the two modes are independent
    (``model.eval()`` does not switch the copy; call ``copy.eval()`` too).

    Only ``nn.ReLU`` modules are swapped (a functional ``F.relu`` inside a ``forward`` cannot be); a model
    without them is returned as a parameter-sharing copy unchanged in behaviour.

    Tensor contract: the copy maps float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)`` like ``model``.

    Args:
        model: the network (typically built by :func:`attrobust.models.create`).
        beta: softplus sharpness, finite and > 0; ``softplus(beta*x)/beta -> relu(x)`` as ``beta -> inf``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    if isinstance(beta, bool) or not isinstance(beta, (int, float)):
        raise ValueError(f"beta: expected a finite float > 0, got {beta!r}")
    check_positive(float(beta), "beta")
    return _swap(model, float(beta))


# The paper's default placement: after the first convolutional or residual block (section 4.1, appendix D).
DEFAULT_SMOOTHING_AFTER = {
    "mnist_cnn": "features.2",  # conv-relu-pool
    "cnn4": "features.4",  # conv-relu-conv-relu-pool
    "lenet": "features.2",
    "small_cnn": "features.2",
    "resnet18": "layer1",
    "wrn": "block1",
    "vgg16": "features.6",  # conv-bn-relu-conv-bn-relu-pool
}


def _check_spec_model(model: object) -> dict[str, Any]:
    spec = getattr(model, "spec", None)
    if (
        not isinstance(model, nn.Sequential)
        or not isinstance(spec, dict)
        or not {"in_channels", "input_size"} <= set(spec)
    ):
        raise ValueError(
            "model: expected an nn.Sequential built by attrobust.models.create (with a `spec` giving in_channels "
            f"and input_size), got {type(model).__name__}"
        )
    return spec


def _reference(model: nn.Module) -> torch.Tensor | None:
    """A parameter (or buffer) of ``model`` giving its device and dtype, or None."""
    ref = next(iter(model.parameters()), None)
    return ref if ref is not None else next(iter(model.buffers()), None)


def smoothing_positions(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """Valid ``after`` positions of :func:`insert_smoothing` for ``model``, mapped to the ``(C, H, W)`` shape of
    the feature map there.

    A position is the dotted path of a module (other than ``normalize``) whose parent is an ``nn.Sequential`` and
    whose output is a 4-D feature map ``(N, C, H, W)``: e.g. ``"features.2"`` for the plain nets and VGG-16,
    ``"layer1"``/``"layer1.0"`` for ResNet-18, ``"block1"``/``"block1.0"`` for WideResNet. Shapes come from one
    forward pass of a ``(1, in_channels, input_size, input_size)`` zero image (from ``model.spec``) without
    gradients and in eval mode (the train/eval mode of every module is restored afterwards; batch-norm
    statistics are not touched). Positions are listed in the order their modules finish in the forward pass (a
    child before the block that contains it: ``"layer1.0"``, ``"layer1.1"``, ``"layer1"``, ...).
    """
    spec = _check_spec_model(model)
    candidates = {
        f"{parent}.{name}" if parent else name: child
        for parent, module in model.named_modules()
        if isinstance(module, nn.Sequential)
        for name, child in module.named_children()
        if parent or name != "normalize"
    }
    shapes: dict[str, tuple[int, int, int]] = {}

    def record(path: str) -> Callable[[nn.Module, object, object], None]:
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            if isinstance(output, torch.Tensor) and output.dim() == 4 and path not in shapes:
                shapes[path] = tuple(output.shape[1:])  # type: ignore[assignment]

        return hook

    ref = _reference(model)
    x = torch.zeros(1, spec["in_channels"], spec["input_size"], spec["input_size"],
                    device=None if ref is None else ref.device, dtype=None if ref is None else ref.dtype)  # fmt: skip
    modes = [(m, m.training) for m in model.modules()]
    handles = [child.register_forward_hook(record(path)) for path, child in candidates.items()]
    try:
        model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        for m, mode in modes:
            m.training = mode
    return shapes


def _canonical(entry: object, where: str) -> dict[str, Any]:
    if not isinstance(entry, Mapping) or not all(isinstance(k, str) for k in entry):
        raise ValueError(
            f"{where}: expected a mapping like {{'after': 'block1', 'kind': 'mean', 'kernel': 3}}, got {entry!r}"
        )
    out: dict[str, Any] = {"after": None, "kind": "mean", "kernel": 3, **entry}
    if out["after"] is not None and not isinstance(out["after"], str):
        raise ValueError(f"{where}: expected 'after' to be a module path string or None, got {out['after']!r}")
    for key, value in list(out.items()):
        if isinstance(value, tuple):
            out[key] = list(value)
    return out


def _insert(model: nn.Sequential, entry: dict[str, Any], positions: dict[str, tuple[int, int, int]]) -> None:
    """Insert one block described by the canonical ``entry`` into ``model`` in place and record it in the spec."""
    spec = model.spec
    after = entry["after"]
    if after is None:
        after = DEFAULT_SMOOTHING_AFTER.get(spec.get("name"))  # type: ignore[arg-type]
        if after is None:
            raise ValueError(
                f"after: expected a position (model {spec.get('name')!r} has no default), got None; "
                f"valid positions: {', '.join(positions)}"
            )
    if after not in positions:
        positions.update(smoothing_positions(model))  # refresh: `after` may name a block inserted meanwhile
    if after not in positions:
        raise ValueError(
            f"after: expected one of the smoothing positions of model {spec.get('name')!r} "
            f"({', '.join(positions)}), got {after!r}"
        )
    channels, h, w = positions[after]
    options = {k: v for k, v in entry.items() if k not in ("after", "kind", "kernel")}
    block = SmoothingBlock(channels, entry["kind"], entry["kernel"], **options)
    try:
        block.check_size(h, w)
    except ValueError as err:
        raise ValueError(f"smoothing {entry['kind']!r} after {after!r} ({channels}x{h}x{w} map): {err}") from None
    ref = _reference(model)
    if ref is not None:
        block.to(device=ref.device, dtype=ref.dtype)
    parent_path, _, child = after.rpartition(".")
    parent = model.get_submodule(parent_path)
    block.train(parent.training)
    name, i = f"smooth_{child}", 2
    while name in parent._modules:
        name, i = f"smooth_{child}_{i}", i + 1
    items = list(parent._modules.items())
    at = [key for key, _ in items].index(child) + 1
    parent._modules = dict([*items[:at], (name, block), *items[at:]])
    positions[f"{parent_path}.{name}" if parent_path else name] = (channels, h, w)
    spec.setdefault("smoothing", []).append({**entry, "after": after})


def apply_smoothing(model: nn.Sequential, smoothing: object) -> nn.Sequential:
    """Insert every block of the list ``smoothing`` (``model.spec["smoothing"]`` format) into ``model`` IN PLACE.

    Used by :func:`attrobust.models.create`; user code should call :func:`insert_smoothing`, which copies.
    Returns ``model``.
    """
    _check_spec_model(model)
    if not isinstance(smoothing, (list, tuple)):
        raise ValueError(f"smoothing: expected a list of block descriptions, got {type(smoothing).__name__}")
    entries = [_canonical(e, f"smoothing[{i}]") for i, e in enumerate(smoothing)]
    positions = smoothing_positions(model) if entries else {}
    for entry in entries:
        _insert(model, entry, positions)
    return model


def insert_smoothing(model: nn.Module, after: str | None = None, kind: str = "mean", kernel: int = 3,
                     **options: Any) -> nn.Sequential:  # fmt: skip
    """Return a copy of ``model`` with a :class:`~attrobust.models.smoothing.SmoothingBlock` after ``after``.

    Args:
        model: an ``nn.Sequential`` built by :func:`attrobust.models.create` (it carries ``model.spec``).
        after: a position from :func:`smoothing_positions` (a dotted module path, e.g. ``"block1"``,
            ``"layer1"``, ``"features.2"``, or a block inserted before). ``None``: the paper's default, after the
            model's first convolutional / residual block (:data:`DEFAULT_SMOOTHING_AFTER`).
        kind, kernel, **options: the block (see :class:`~attrobust.models.smoothing.SmoothingBlock`).

    The copy is a deep copy: it shares no parameter with ``model`` (``model`` is not modified). Its channels are
    inferred from a dry forward pass; the block gets the device, dtype and train/eval mode of its surroundings,
    and its parameters come from the global torch RNG. The block is added to the same ``nn.Sequential`` as
    ``after``, named ``smooth_<name>`` (``smooth_<name>_2``... when repeated), so ``Normalize`` stays first and
    existing module paths keep their names. ``spec["smoothing"]`` gains
    ``{"after": ..., "kind": ..., "kernel": ..., **options}`` so that ``create(**copy.spec)`` and
    :func:`attrobust.models.load` rebuild the same architecture. Call it again to add more blocks.

    Tensor contract: the copy maps float ``(N, C, H, W)`` images in [0, 1] to logits ``(N, K)`` like ``model``.
    """
    _check_spec_model(model)
    new = copy.deepcopy(model)
    entry = _canonical({"after": after, "kind": kind, "kernel": kernel, **options}, "smoothing")
    _insert(new, entry, smoothing_positions(new))  # type: ignore[arg-type]
    return new  # type: ignore[return-value]
