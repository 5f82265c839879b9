"""Upper bounds on the worst-case attribution deviation (paper 004: Wang and Kong 2023, appendix A-B).

Notation. ``g = g^y(x)`` is a gradient-based attribution of label ``y`` (simple gradient, input x gradient or
integrated gradients, computed with :mod:`attrobust.attributions` and ``create_graph=True``), flattened to a
vector of ``d = C * H * W`` entries, and ``J = d g / d x`` its ``d x d`` Jacobian (``J_ij = d g_i / d x_j``). The
paper writes the first-order change as ``delta^T nabla g``, i.e. its ``H = nabla g^y`` is ``J^T``; hence its
``P = H H^T`` is ``J^T J`` here and ``||J delta||_2^2 = delta^T P delta``. ``xi_max`` is the largest singular
value of ``J`` (= of ``H``). For the simple gradient ``J`` is the (symmetric) input Hessian of the target logit.

Bounds (per example, ``(N,)``):

- :func:`euclidean_bound` -- Theorem 1: ``T_e = xi_max * eps`` for ``||delta||_2 <= eps``; Corollary 1 (Eq. 18)
  for l_inf balls: ``sqrt(d) * xi_max * eps``.
- :func:`modified_euclidean_bound` -- Theorem 3 / Eqs. 38-39: ``T'_e = c * xi_max * eps`` with
  ``c = max{1, ||g(x + eps v_max) - g(x)||_2 / (xi_max eps)}``.
- :func:`linf_bound` -- Theorem 2 (Eq. 7): ``eps * sqrt(sum_ij |P_ij|)`` for ``||delta||_inf <= eps``.
- :func:`cosine_bound` -- Corollary 2 (Eq. 10): ``D_c <= 1 - sqrt(1 - T^2 / ||g(x)||_2^2)`` from any Euclidean
  bound ``T`` (:func:`cosine_from_euclidean`).
- :func:`local_linearity_eta` -- appendix B.1: the first-order Taylor remainder ``||g(x + delta) - g(x) - J delta||``.

What is exact. Theorems 1-2 bound the deviation of the *linearised* attribution: ``||J delta||_2 <= xi_max
||delta||_2 <= T_e`` and ``||J delta||_2 <= eps sqrt(sum |P_ij|)`` hold for every ``delta`` in the ball (the first
one with equality at ``delta = +-eps v_max``). The true deviation obeys ``||g(x + delta) - g(x)||_2 <= T + eta(x,
delta)`` (triangle inequality); it can exceed ``T`` (and ``T'_e``, whose ``c`` is measured along ``v_max`` only)
when the attribution is not linear on the ball. The paper reports such cases too (Tables 9-10).

Cost. ``J`` is never formed: the functions use Jacobian-vector products (``J v`` by double backward through the
graph of ``J^T u``, or ``J^T v`` itself when ``J`` is symmetric) and vector-Jacobian products (``J^T v``), batched
over the examples of ``x``, which do not interact: the attribution runs inside ``attrobust.models.eval_norm``
(batch norm with its running statistics, no dropout, no buffer written). ``xi_max`` comes from power iteration on
``J^T J`` (two products per iteration), which scales to 224x224x3 inputs. The l_inf bound needs all of ``P``: it
is accumulated column block by column block (``P e_k = J^T (J e_k)``, ``2 d`` products per example, on ``chunk``
stacked copies of the batch), so it refuses inputs with more than ``max_features`` features unless told otherwise.

The attribution as a function of the input (resolved with :func:`attrobust.attributions.explainer`, without the
[0, 1] check), the Jacobian products and the power iteration live in :mod:`attrobust.metrics._jacobian`; this
module holds the bounds themselves.

A method needing second derivatives cannot use a ReLU network (its Hessian vanishes almost everywhere): such a
model raises ``ValueError`` unless ``beta`` is given, in which case a softplus(beta) copy is used
(:func:`attrobust.models.softplus`).

Tensor contract: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``, the model returns logits ``(N, K)``,
``eps`` in pixel units; results are per-example tensors ``(N,)`` in ``x``'s dtype on ``x``'s device.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn

from attrobust._checks import check_choice, check_int, check_positive
from attrobust.metrics._jacobian import (
    ATTRIBUTIONS,
    AttributionFn,
    BoundAttribution,
    Jacobian,
    SpectralNorm,
    attribution_with_graph,
    evaluate,
    power_iteration,
    row_norm,
)

NORMS = ("l2", "linf")
COSINE_BOUNDS = ("euclidean", "modified", "linf")


class ModifiedBound(NamedTuple):
    """Result of :func:`modified_euclidean_bound`, one entry ``(N,)`` per example.

    ``bound`` = ``T'_e = c * xi_max * eps``; ``c`` the local-linearity constant of Eq. 39 (``>= 1``);
    ``xi_max`` the singular value estimate; ``euclidean`` = ``T_e = xi_max * eps`` (Theorem 1).
    """

    bound: torch.Tensor
    c: torch.Tensor
    xi_max: torch.Tensor
    euclidean: torch.Tensor


def _spectral(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    spec: BoundAttribution,
    iters: int,
    tol: float,
    generator: torch.Generator | None,
) -> tuple[AttributionFn, Jacobian, SpectralNorm]:
    """The validated attribution, its Jacobian at ``x`` and the power iteration's result (Theorem 1's ``xi_max``)."""
    fn, symmetric = attribution_with_graph(model, x, y, spec, "bounds")
    check_int(iters, "iters")
    check_positive(float(tol), "tol", allow_zero=True)
    jac = Jacobian(fn, x, y, symmetric)
    return fn, jac, power_iteration(jac, x, iters, float(tol), generator)


def attribution_spectral_norm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, *,
    attribution: str = "saliency", beta: float | None = None, output: str = "logit", ig_steps: int = 50,
    ig_rule: str = "right", iters: int = 100, tol: float = 1e-5, generator: torch.Generator | None = None,
) -> SpectralNorm:
    """Largest singular value ``xi_max`` of the attribution Jacobian ``J = d g^y / d x`` (paper 004, Theorem 1).

    Power iteration on ``J^T J`` for all examples at once: ``v <- J^T (J v) / ||J^T (J v)||`` from a random unit
    start drawn with ``generator``, with ``xi_max = ||J v||``; it stops after ``iters`` iterations or once the
    relative change of every example's estimate is at most ``tol``. Each iteration costs one Jacobian-vector and
    one vector-Jacobian product (double backward through the attribution), so memory stays a few times the
    attribution's graph and ``J`` (``d x d``) is never formed. Convergence is geometric in the squared ratio of
    the two largest singular values; check ``converged``.

    Args:
        model: classifier returning logits ``(N, K)``; smooth (no ``nn.ReLU``) unless ``beta`` is given.
        x: images, float ``(N, C, H, W)`` in [0, 1]; ``y``: int64 labels ``(N,)``, the attributed class.
        attribution: ``"saliency"`` (simple gradient), ``"input_x_gradient"`` or ``"integrated_gradients"``
            (zero baseline, ``ig_steps`` points, ``ig_rule`` quadrature rule of ``ig_alphas``).
        beta: softplus sharpness for a smooth copy of a ReLU model; ``output``: ``"logit"``, ``"probability"``
            or ``"loss"`` (the scalar whose gradient is the attribution).

    Returns:
        :class:`SpectralNorm` (``xi_max`` ``(N,)``, ``v_max`` ``(N, C, H, W)``, ``converged`` ``(N,)``,
        ``iterations``).
    """
    spec = BoundAttribution(attribution, beta, output, ig_steps, ig_rule)
    return _spectral(model, x, y, spec, iters, tol, generator)[2]


def euclidean_bound(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
    norm: str = "l2", attribution: str = "saliency", beta: float | None = None, output: str = "logit",
    ig_steps: int = 50, ig_rule: str = "right", iters: int = 100, tol: float = 1e-5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Euclidean upper bound ``T_e`` on ``||g^y(x + delta) - g^y(x)||_2`` (paper 004, Theorem 1 and Corollary 1).

    ``norm="l2"`` (``||delta||_2 <= eps``): ``T_e = xi_max * eps`` (Theorem 1). ``norm="linf"``
    (``||delta||_inf <= eps``): ``T_e = sqrt(d) * xi_max * eps`` with ``d = C * H * W`` (Corollary 1, Eq. 18, with
    ``p = inf``). ``xi_max`` comes from :func:`attribution_spectral_norm` (same options). Exact for the linearised
    attribution (``||J delta||_2 <= T_e``); see the module notes for the true deviation.

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; returns ``(N,)``.
    """
    check_positive(float(eps), "eps", allow_zero=True)
    check_choice(norm, "norm", NORMS)
    spec = BoundAttribution(attribution, beta, output, ig_steps, ig_rule)
    xi_max = _spectral(model, x, y, spec, iters, tol, generator)[2].xi_max
    factor = math.sqrt(x[0].numel()) if norm == "linf" else 1.0
    return xi_max * (float(eps) * factor)


def modified_euclidean_bound(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
    attribution: str = "saliency", beta: float | None = None, output: str = "logit", ig_steps: int = 50,
    ig_rule: str = "right", iters: int = 100, tol: float = 1e-5, generator: torch.Generator | None = None,
) -> ModifiedBound:
    """Modified Euclidean bound ``T'_e = c * xi_max * eps`` (paper 004, Theorem 3 and Eq. 39), l2 ball.

    ``c = max{1, ||g^y(x + eps v_max) - g^y(x)||_2 / (xi_max eps)}`` measures how far the attribution departs
    from its linearisation along the worst linear direction ``v_max``. The sign of a singular vector is
    arbitrary, and Theorem 3's equality case is ``delta = +-eps v_max``, so the deviation is taken as the larger
    of the two signs. The points ``x +- eps v_max`` are not clamped to [0, 1] (the bound concerns the whole ball).
    Equivalently ``T'_e = max(T_e, deviation)``; where ``xi_max = 0`` and the deviation is positive, ``c`` is
    ``inf`` and ``T'_e`` is the deviation.

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; returns a :class:`ModifiedBound` of
    ``(N,)`` tensors.
    """
    check_positive(float(eps), "eps", allow_zero=True)
    bound_attribution = BoundAttribution(attribution, beta, output, ig_steps, ig_rule)
    fn, jac, spec = _spectral(model, x, y, bound_attribution, iters, tol, generator)
    g = jac.g.detach()
    step = float(eps) * spec.v_max
    dev = torch.maximum(row_norm(evaluate(fn, x + step, y) - g), row_norm(evaluate(fn, x - step, y) - g))
    t_e = spec.xi_max * float(eps)
    bound = torch.maximum(t_e, dev)
    c = torch.where(t_e > 0, bound / t_e.clamp_min(torch.finfo(x.dtype).tiny), torch.where(dev > 0, math.inf, 1.0))
    return ModifiedBound(bound=bound, c=c.to(x.dtype), xi_max=spec.xi_max, euclidean=t_e)


def linf_bound(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
    attribution: str = "saliency", beta: float | None = None, output: str = "logit", ig_steps: int = 50,
    ig_rule: str = "right", chunk: int | None = None, max_features: int | None = 16384,
) -> torch.Tensor:
    """l_inf upper bound ``eps * sqrt(sum_ij |P_ij|)``, ``P = H H^T = J^T J`` (paper 004, Theorem 2, Eq. 7).

    For ``||delta||_inf <= eps``: ``||J delta||_2^2 = delta^T P delta <= eps^2 sum_ij |P_ij|``. ``P`` is never
    stored: its columns ``P e_k = J^T (J e_k)`` are formed ``chunk`` at a time for all examples (a Jacobian-vector
    then a vector-Jacobian product on ``chunk`` stacked copies of the batch, one backward pass each), and
    ``|P|`` is summed as they come. That is ``2 d`` products per example (``d = C * H * W``), with the memory
    of the attribution graph of ``chunk * N`` images plus ``chunk * N * d`` values; ``chunk=None`` picks about
    ``2**20 / (N d)`` columns (at least 1, at most d). Inputs with ``d > max_features`` are refused with ``ValueError``
    (the cost grows like ``d`` backward passes per image); pass ``max_features=None`` to run anyway.

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; returns ``(N,)``.
    """
    check_positive(float(eps), "eps", allow_zero=True)
    spec = BoundAttribution(attribution, beta, output, ig_steps, ig_rule)
    fn, symmetric = attribution_with_graph(model, x, y, spec, "linf_bound")
    n, d = x.shape[0], x[0].numel()
    if max_features is not None:
        check_int(max_features, "max_features")
        if d > max_features:
            raise ValueError(
                f"linf_bound: expected at most max_features={max_features} input features per example (the exact "
                f"sum over P = J^T J costs 2*d Jacobian products per example), got d={d} for input shape "
                f"{tuple(x.shape[1:])}; pass max_features=None to compute it anyway"
            )
    if chunk is None:
        chunk = max(1, min(d, (1 << 20) // (n * d)))
    check_int(chunk, "chunk")
    # ``chunk`` copies of the batch, copy b in rows b*N .. b*N + N - 1: one ordinary backward pass then applies J
    # (or J^T) to ``chunk`` different vectors per example.
    jac = Jacobian(fn, x.repeat(chunk, 1, 1, 1), y.repeat(chunk), symmetric)
    total = torch.zeros(n, dtype=torch.float64, device=x.device)
    rows = torch.arange(chunk * n, device=x.device)
    for start in range(0, d, chunk):
        cols = torch.arange(start, start + chunk, device=x.device).repeat_interleave(n)  # column of each row
        basis = torch.zeros(chunk * n, d, dtype=x.dtype, device=x.device)
        valid = cols < d  # the last block is padded with zero vectors
        basis[rows[valid], cols[valid]] = 1.0
        p_cols = jac.t(jac(basis.view(chunk * n, *x.shape[1:])))  # row b*N + n: column cols[b*N + n] of P_n
        total += p_cols.abs().double().flatten(1).sum(1).view(chunk, n).sum(0)
    return (float(eps) * total.sqrt()).to(x.dtype)


def cosine_from_euclidean(t: torch.Tensor, attribution_norm: torch.Tensor) -> torch.Tensor:
    """Cosine-distance bound from a Euclidean bound (paper 004, Corollary 2, Eq. 10).

    If ``||g' - g||_2 <= t`` then ``D_c(g', g) = 1 - cos(g', g) <= 1 - sqrt(1 - t^2 / ||g||^2)`` for
    ``0 <= t <= ||g||``. For ``t > ||g||`` (including ``g = 0``) the ball around ``g`` contains the origin and
    every direction, so the only bound is the trivial ``2``.

    Args:
        t: Euclidean bounds ``(N,)`` (>= 0); attribution_norm: ``||g^y(x)||_2`` ``(N,)``.

    Returns:
        ``(N,)`` cosine-distance bounds in [0, 1] (or 2 where ``t > ||g||``).
    """
    if not isinstance(t, torch.Tensor) or not isinstance(attribution_norm, torch.Tensor):
        raise ValueError("t, attribution_norm: expected torch.Tensors of shape (N,)")
    if t.shape != attribution_norm.shape or t.dim() != 1:
        raise ValueError(
            f"t, attribution_norm: expected equal shapes (N,), got {tuple(t.shape)} and {tuple(attribution_norm.shape)}"
        )
    if bool((t < 0).any()) or bool((attribution_norm < 0).any()):
        raise ValueError("t, attribution_norm: expected non-negative values, got negative entries")
    ratio = (t / attribution_norm.clamp_min(torch.finfo(t.dtype).tiny)).clamp(max=1.0)
    bound = 1.0 - torch.sqrt(1.0 - ratio**2)
    return torch.where(t > attribution_norm, torch.full_like(bound, 2.0), bound)


def cosine_bound(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *,
    bound: str = "euclidean", degrees: bool = False, attribution: str = "saliency", beta: float | None = None,
    output: str = "logit", ig_steps: int = 50, ig_rule: str = "right", iters: int = 100, tol: float = 1e-5,
    chunk: int | None = None, max_features: int | None = 16384, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Cosine-distance bound ``T_c`` (paper 004, Corollary 2, Eq. 10) from a Euclidean bound ``T``.

    ``bound`` picks ``T``: ``"euclidean"`` (``T_e``, l2 ball, Theorem 1), ``"modified"`` (``T'_e``, Eq. 39) or
    ``"linf"`` (Theorem 2, l_inf ball). Then ``T_c = 1 - sqrt(1 - T^2 / ||g^y(x)||_2^2)``
    (:func:`cosine_from_euclidean`; 2 where ``T > ||g||``). ``degrees=True`` returns the angle
    ``arccos(1 - T_c)`` in degrees instead, as the paper's tables do (``arcsin(T / ||g||)``; 180 where
    ``T > ||g||``).

    Shapes: ``x`` float ``(N, C, H, W)`` in [0, 1], ``y`` int64 ``(N,)``; returns ``(N,)``.
    """
    check_choice(bound, "bound", COSINE_BOUNDS)
    common = {"attribution": attribution, "beta": beta, "output": output, "ig_steps": ig_steps, "ig_rule": ig_rule}
    if bound == "linf":
        t = linf_bound(model, x, y, eps, chunk=chunk, max_features=max_features, **common)
    elif bound == "modified":
        t = modified_euclidean_bound(model, x, y, eps, iters=iters, tol=tol, generator=generator, **common).bound
    else:
        t = euclidean_bound(model, x, y, eps, iters=iters, tol=tol, generator=generator, **common)
    fn, _ = attribution_with_graph(model, x, y, BoundAttribution(**common), "bounds")
    dc = cosine_from_euclidean(t, row_norm(evaluate(fn, x, y)))
    if degrees:
        return torch.rad2deg(torch.arccos((1.0 - dc).clamp(-1.0, 1.0)))
    return dc


def local_linearity_eta(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, delta: torch.Tensor, *,
    attribution: str = "saliency", beta: float | None = None, output: str = "logit", ig_steps: int = 50,
    ig_rule: str = "right",
) -> torch.Tensor:
    """Local-linearity gap ``eta(x, delta) = ||g^y(x + delta) - g^y(x) - J delta||_2`` (paper 004, appendix B.1).

    The norm of the first-order Taylor remainder ``R_1`` of the attribution (the paper prints it as
    ``||g(x) - g(x + delta) - delta^T nabla g(x)||``, a sign slip: with that sign the quantity would be about
    ``2 ||J delta||``, not a remainder). It is 0 for an attribution that is linear on the segment and
    ``O(||delta||^2)`` for a smooth one, and ``||g(x + delta) - g(x)|| <= ||J delta|| + eta``.

    Args:
        delta: perturbation, float tensor of ``x``'s shape (finite; ``x + delta`` need not lie in [0, 1]).

    Returns:
        ``(N,)`` tensor in ``x``'s dtype on its device.
    """
    spec = BoundAttribution(attribution, beta, output, ig_steps, ig_rule)
    fn, symmetric = attribution_with_graph(model, x, y, spec, "local_linearity_eta")
    if not isinstance(delta, torch.Tensor) or delta.shape != x.shape or not delta.is_floating_point():
        got = f"{tuple(delta.shape)} {delta.dtype}" if isinstance(delta, torch.Tensor) else type(delta).__name__
        raise ValueError(f"delta: expected a float tensor of shape {tuple(x.shape)}, got {got}")
    if not bool(torch.isfinite(delta).all()):
        raise ValueError(f"delta: expected finite values, got {int((~torch.isfinite(delta)).sum())} NaN/inf entries")
    delta = delta.detach().to(x.device, x.dtype)
    jac = Jacobian(fn, x, y, symmetric)
    return row_norm(evaluate(fn, x + delta, y) - jac.g.detach() - jac(delta))


__all__ = [
    "ATTRIBUTIONS",
    "ModifiedBound",
    "SpectralNorm",
    "attribution_spectral_norm",
    "cosine_bound",
    "cosine_from_euclidean",
    "euclidean_bound",
    "linf_bound",
    "local_linearity_eta",
    "modified_euclidean_bound",
]
