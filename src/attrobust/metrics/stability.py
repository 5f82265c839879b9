"""Stability of attributions and of the network around an input: relative input / output / representation
stability (RIS, ROS, RRS; Agarwal et al. 2022), activation consistency (IGR paper, eq. 6) and the alignment
between an image and its input gradient (ART paper, Fig. 6).

Tensor contract: images ``x`` are float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, models return logits
``(N, K)``. An explainer is any ``explain(model, x, y) -> Tensor (N, ...)``: every registered attribution of
:mod:`attrobust.attributions` (also given by its registered name), or a ``functools.partial`` of one with options.
Every metric returns a per-example tensor ``(N,)`` (float64 for float64 images, else float32); aggregation is
the caller's. Bad input raises ``ValueError``. Models should be in eval mode (a warning is given otherwise);
either way every forward pass and attribution runs per example (``attrobust.models.eval_norm``: batch norm with
its running statistics, no dropout) and no buffer of the model is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from attrobust._checks import (
    check_choice,
    check_images,
    check_int,
    check_labels,
    check_logits,
    check_model_input,
    check_positive,
    check_same_shape,
    model_input_errors,
    model_logits,
    warn_if_training,
    warn_once,
)
from attrobust._ranking import result_dtype
from attrobust.attributions import explainer, saliency
from attrobust.attributions.layer import replace_output, resolve_layer
from attrobust.metrics.similarity import cosine_rows
from attrobust.models import eval_norm

Explainer = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]
STABILITY_REFERENCES = ("input", "output", "representation")
CONSISTENCY_STATISTICS = ("ratio", "agreement")


def _iter_perturbations(
    x: torch.Tensor, n_samples: int, noise: float, generator: torch.Generator | None
) -> Iterator[torch.Tensor]:
    device = generator.device if generator is not None else x.device
    for _ in range(n_samples):
        u = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
        yield (x.detach() + (2 * u - 1) * noise).clamp(0.0, 1.0)


def uniform_perturbations(
    x: torch.Tensor, n_samples: int = 10, noise: float = 0.05, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The neighbourhood samples of the stability metrics: ``clamp(x + U(-noise, noise), 0, 1)``.

    Args:
        x: images ``(N, C, H, W)`` in [0, 1].
        n_samples: number of samples per image (an integer >= 1).
        noise: half-width of the l_inf ball (pixel units, > 0).
        generator: ``torch.Generator`` for the draws (any device; ``None`` uses the global RNG). Sample ``s`` is
            one ``torch.rand`` call of ``x``'s shape, so the stability metrics, which draw the same way, see the
            same samples for the same seed.

    Returns:
        Tensor ``(n_samples, N, C, H, W)`` in [0, 1] on ``x``'s device, inside the ``noise`` ball around ``x``.
    """
    check_images(x)
    check_int(n_samples, "n_samples")
    check_positive(noise, "noise")
    return torch.stack(list(_iter_perturbations(x, n_samples, noise, generator)))


def _forward(model: nn.Module, x: torch.Tensor, module: nn.Module | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits ``(N, K)`` and, when ``module`` is given, its output flattened to ``(N, F)`` (no autograd)."""
    store: list[torch.Tensor] = []

    def keep(out: torch.Tensor) -> torch.Tensor:
        store.append(out.detach())
        return out

    with torch.no_grad():
        if module is None:
            return model_logits(model, x), None
        check_model_input(model, x)
        with replace_output(module, keep), model_input_errors(model, x):
            logits = model(x)
    if len(store) != 1:
        raise ValueError(f"layer: expected the layer to run once per forward pass, it ran {len(store)} times")
    return check_logits(logits, x.shape[0]), store[0].flatten(1)


def _check_perturbations(perturbations: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(perturbations, torch.Tensor) or perturbations.dim() != 5 or perturbations.shape[1:] != x.shape:
        got = tuple(perturbations.shape) if isinstance(perturbations, torch.Tensor) else type(perturbations).__name__
        raise ValueError(f"perturbations: expected shape (S, {', '.join(map(str, x.shape))}), got {got}")
    if perturbations.shape[0] == 0:
        raise ValueError("perturbations: expected at least one sample (S >= 1), got S = 0")
    check_images(perturbations.flatten(0, 1), "perturbations")
    return perturbations.to(x.device)


def _relative(diff: torch.Tensor, ref: torch.Tensor, eps_min: float) -> torch.Tensor:
    """Element-wise ``diff / ref`` with ``eps_min`` in place of the zero entries of ``ref`` (as Quantus does)."""
    return diff / (ref + (ref == 0).to(ref.dtype) * eps_min)


def relative_stability(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain: Explainer | str, *,
    against: str = "input", layer: str | nn.Module | None = None, relative: bool | None = None, n_samples: int = 10,
    noise: float = 0.05, eps_min: float = 1e-6, p: float = 2.0, generator: torch.Generator | None = None,
    perturbations: torch.Tensor | None = None,
) -> torch.Tensor:
    """Worst relative change of the attribution over label-preserving neighbours, relative to a reference change.

    For each example, over the samples ``x'`` of its neighbourhood whose predicted class equals that of ``x``::

        max_x'  || (e(x) - e(x')) / e(x) ||_p  /  max(|| delta_ref(x, x') ||_p, eps_min)

    with ``e = explain(model, ., y)``, element-wise division (zeros of the divisor replaced by ``eps_min``) and
    ``delta_ref`` the change of the reference ``against`` (Agarwal et al. 2022; feature-map smoothing paper,
    appendix I.2, eqs. 40-42, computed as in Quantus, which that paper used):

    - ``"input"`` (RIS): ``(x - x') / x``, always relative;
    - ``"output"`` (ROS): the logits, ``z(x) - z(x')``, or ``(z(x) - z(x')) / z(x)`` with ``relative=True``
      (default ``False``: eq. 42 and Quantus);
    - ``"representation"`` (RRS): the output of ``layer`` flattened, ``(a(x) - a(x')) / a(x)`` by default
      (Quantus), or ``a(x) - a(x')`` with ``relative=False`` (eq. 41 as printed).

    Lower is more stable. The neighbourhood is :func:`uniform_perturbations` (``n_samples`` draws from the l_inf
    ball of radius ``noise``, clamped to [0, 1]) unless ``perturbations`` ``(S, N, C, H, W)`` are given.

    Args:
        model: classifier returning logits ``(N, K)`` (eval mode).
        x: images ``(N, C, H, W)`` in [0, 1].
        y: int64 ``(N,)``, the class explained (the label or the prediction).
        explain: ``explain(model, x, y) -> (N, ...)`` or the name of a registered attribution.
        against, layer, relative: the reference, see above; ``layer`` (a dotted submodule name or the module,
            run once per forward pass) is required for ``"representation"`` and refused otherwise.
        n_samples, noise, generator: the sampled neighbourhood (ignored when ``perturbations`` is given).
        eps_min: floor of the denominator and replacement of zero divisors (> 0).
        p: the norm (``>= 1`` or ``inf``) of both relative changes; 2 as in Quantus.
        perturbations: explicit neighbours ``(S, N, C, H, W)`` in [0, 1].

    Returns:
        Tensor ``(N,)`` >= 0. An example whose every neighbour changes the prediction gets NaN, with a warning
        (Quantus gives NaN as soon as one of them does; here those neighbours are only left out).
    """
    check_choice(against, "against", STABILITY_REFERENCES)
    check_images(x)
    warn_if_training(model)
    fn = explainer(explain, checked=True)
    check_positive(eps_min, "eps_min")
    if not (p >= 1):
        raise ValueError(f"p: expected a norm order >= 1 (or inf), got {p!r}")
    if (layer is None) == (against == "representation"):
        raise ValueError(f"layer: expected a layer exactly when against='representation', got {layer!r}")
    module = resolve_layer(model, layer) if layer is not None else None
    relative = (against != "output") if relative is None else relative
    if against == "input" and not relative:
        raise ValueError("relative: the input change of RIS is always relative, got relative=False")
    samples: Iterator[torch.Tensor] | torch.Tensor
    if perturbations is not None:
        samples = _check_perturbations(perturbations, x)
    else:
        check_int(n_samples, "n_samples")
        check_positive(noise, "noise")
        samples = _iter_perturbations(x, n_samples, noise, generator)
    with eval_norm(model):  # per example: running statistics, no dropout, no buffer written
        best, kept = _worst_ratio(model, x, y, fn, samples, _Reference(against, module, relative, eps_min, p))
    if not bool(kept.all()):
        warn_once(
            f"relative_stability: {int((~kept).sum())} example(s) have no neighbour with the same prediction; "
            "their value is NaN (use a smaller noise or more samples)"
        )
    return best.masked_fill(~kept, float("nan")).to(result_dtype(x))


@dataclass(frozen=True)
class _Reference:
    """The denominator of :func:`relative_stability`: the change of ``against`` (the input, the logits, or the
    flattened output of ``module``), divided element-wise by its clean value when ``relative``, floored at
    ``eps_min``, in the ``p``-norm (also the numerator's norm)."""

    against: str
    module: nn.Module | None
    relative: bool
    eps_min: float
    p: float


def _worst_ratio(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    explain: Explainer,
    samples: Iterator[torch.Tensor] | torch.Tensor,
    ref: _Reference,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example ``(N,)`` float64: the largest ratio over the label-preserving samples (``-inf`` if none), and
    bool ``(N,)``: some sample kept the prediction."""
    n = x.shape[0]
    logits, rep = _forward(model, x, ref.module)
    check_labels(y, n, logits.shape[1])
    pred = logits.argmax(1)
    e_x = explain(model, x, y).detach().double()
    reference = {"input": x.detach(), "output": logits, "representation": rep}[ref.against].double()
    best = torch.full((n,), float("-inf"), dtype=torch.float64, device=x.device)
    kept = torch.zeros(n, dtype=torch.bool, device=x.device)
    for xs in samples:
        logits_s, rep_s = _forward(model, xs, ref.module)
        e_s = explain(model, xs, y).detach().double()
        if e_s.shape != e_x.shape:
            raise ValueError(f"explain: expected attributions of shape {tuple(e_x.shape)}, got {tuple(e_s.shape)}")
        num = torch.linalg.vector_norm(_relative(e_x - e_s, e_x, ref.eps_min).flatten(1), ord=ref.p, dim=1)
        ref_s = {"input": xs, "output": logits_s, "representation": rep_s}[ref.against].double()
        change = reference - ref_s
        if ref.relative:
            change = _relative(change, reference, ref.eps_min)
        den = torch.linalg.vector_norm(change.flatten(1), ord=ref.p, dim=1).clamp(min=ref.eps_min)
        same = logits_s.argmax(1) == pred
        best = torch.where(same, torch.maximum(best, num / den), best)
        kept |= same
    return best, kept


def ris(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain: Explainer | str, *,
    n_samples: int = 10, noise: float = 0.05, eps_min: float = 1e-6, p: float = 2.0,
    generator: torch.Generator | None = None, perturbations: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relative input stability (eq. 40): :func:`relative_stability` with ``against="input"``; ``(N,)``, lower is
    more stable. ``x`` ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; see :func:`relative_stability`."""
    return relative_stability(
        model, x, y, explain, against="input", n_samples=n_samples, noise=noise, eps_min=eps_min, p=p,
        generator=generator, perturbations=perturbations,
    )  # fmt: skip


def ros(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain: Explainer | str, *,
    relative: bool = False, n_samples: int = 10, noise: float = 0.05, eps_min: float = 1e-6, p: float = 2.0,
    generator: torch.Generator | None = None, perturbations: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relative output stability (eq. 42): :func:`relative_stability` with ``against="output"`` (logit change,
    ``relative=True`` divides it by the logits); ``(N,)``, lower is more stable. ``x`` ``(N, C, H, W)`` in
    [0, 1], ``y`` int64 ``(N,)``."""
    return relative_stability(
        model, x, y, explain, against="output", relative=relative, n_samples=n_samples, noise=noise,
        eps_min=eps_min, p=p, generator=generator, perturbations=perturbations,
    )  # fmt: skip


def rrs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, explain: Explainer | str, *,
    layer: str | nn.Module, relative: bool = True, n_samples: int = 10, noise: float = 0.05, eps_min: float = 1e-6,
    p: float = 2.0, generator: torch.Generator | None = None, perturbations: torch.Tensor | None = None,
) -> torch.Tensor:
    """Relative representation stability (eq. 41): :func:`relative_stability` with ``against="representation"``
    on the output of ``layer`` (read with a forward hook); ``(N,)``, lower is more stable. ``x`` ``(N, C, H, W)``
    in [0, 1], ``y`` int64 ``(N,)``."""
    return relative_stability(
        model, x, y, explain, against="representation", layer=layer, relative=relative, n_samples=n_samples,
        noise=noise, eps_min=eps_min, p=p, generator=generator, perturbations=perturbations,
    )  # fmt: skip


def _relu_states(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """On/off states ``(N, U)`` (output > 0) of every unit of every ``nn.ReLU`` call in one forward pass."""
    states: list[torch.Tensor] = []
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    if not relus:
        raise ValueError("model: expected nn.ReLU modules (activation consistency counts their states), found none")
    handles = [m.register_forward_hook(lambda _m, _i, out: states.append((out > 0).flatten(1))) for m in relus]
    try:
        with torch.no_grad():
            model_logits(model, x)
    finally:
        for h in handles:
            h.remove()
    return torch.cat(states, dim=1)


def activation_consistency(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, *, statistic: str = "ratio"
) -> torch.Tensor:
    """How consistently the ReLU units are switched on for ``x`` and a perturbed ``x_adv`` (IGR paper, sec. 5.2).

    With ``A`` / ``B`` the sets of units (all outputs of every ``nn.ReLU`` module call, functional ReLUs are not
    seen) that are on (output > 0) for ``x`` / ``x_adv``:

    - ``"ratio"`` (eq. 6 / Prop. 1): ``P(A and B) / sqrt(P(A) P(B))`` over the units, i.e. the cosine of the two
      binary activation patterns; 1 when both switch on the same units. NaN (with a warning) where no unit is on
      for one of the inputs.
    - ``"agreement"``: the fraction of units whose on/off state is the same for both inputs.

    Args:
        model: a classifier with ``nn.ReLU`` modules, returning logits ``(N, K)`` (eval mode).
        x, x_adv: images ``(N, C, H, W)`` in [0, 1], same shape.
        statistic: ``"ratio"`` or ``"agreement"``.

    Returns:
        Tensor ``(N,)`` in [0, 1] (float64 for float64 images, else float32).
    """
    check_choice(statistic, "statistic", CONSISTENCY_STATISTICS)
    check_images(x)
    check_images(x_adv, "x_adv")
    check_same_shape(x, x_adv, "x, x_adv")
    warn_if_training(model)
    with eval_norm(model):
        a, b = _relu_states(model, x), _relu_states(model, x_adv)
    if statistic == "agreement":
        return (a == b).double().mean(1).to(result_dtype(x))
    return cosine_rows(a.double(), b.double(), "activation_consistency").to(result_dtype(x))


def image_gradient_alignment(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, output: str = "logit", channel_mean: bool = False
) -> torch.Tensor:
    """Cosine between each image and its input gradient ``grad_x f_y(x)`` (ART paper, Fig. 6; its training loss
    raises this alignment).

    Args:
        model: classifier returning logits ``(N, K)`` (eval mode).
        x: images ``(N, C, H, W)`` in [0, 1].
        y: int64 ``(N,)``, the class whose output is differentiated (as :func:`attrobust.attributions.saliency`).
        output: ``"logit"`` (default), ``"probability"`` or ``"loss"``.
        channel_mean: average image and gradient over channels first (as ART's CUB models do), instead of
            comparing all ``C * H * W`` values.

    Returns:
        Tensor ``(N,)`` in [-1, 1]; NaN (with a warning) for an all-zero image or gradient.
    """
    check_images(x)
    warn_if_training(model)
    with eval_norm(model):
        g = saliency(model, x, y, output=output)
    xx = x.detach()
    if channel_mean:
        xx, g = xx.mean(1), g.mean(1)
    cos = cosine_rows(xx.flatten(1).double(), g.flatten(1).double(), "image_gradient_alignment")
    return cos.to(result_dtype(x))


__all__ = [
    "CONSISTENCY_STATISTICS",
    "STABILITY_REFERENCES",
    "Explainer",
    "activation_consistency",
    "image_gradient_alignment",
    "relative_stability",
    "ris",
    "ros",
    "rrs",
    "uniform_perturbations",
]
