"""Ranking kernels shared by attacks (step selection) and metrics: saliency maps, top-k intersection, Kendall tau-b.

They live below both layers so that attacks can judge their steps without importing ``metrics``; the metrics
are re-exported by :mod:`attrobust.metrics.similarity`, which also builds on the public helpers here
(:func:`as_maps`, :func:`check_map_pair`, :func:`by_chunks`, :func:`pair_counts`, :func:`order_keys`,
:func:`run_starts`, :func:`result_dtype`); underscore names are this module's own.

Tensor contract: attributions are float tensors ``(N, C, H, W)`` of the input's shape; ranking metrics work on
maps ``(N, D)`` obtained with :func:`saliency_map` (|a| summed over channels, flattened, ``D = H * W``). Every
metric returns a per-example tensor ``(N,)``; aggregation is the caller's. Bad input raises ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from attrobust._checks import check_k, check_map_tensor, check_nchw, check_same_shape
from attrobust._pair_counts_cpu import pair_counts as pair_counts_cpu

# Elements (rows x D) that ``kendall_tau`` handles together: chunks bound the memory for any N. On the CPU the
# compiled kernel works row by row and the chunk only bounds its key tables (a few int64 per element); on an
# accelerator the vectorised passes hold about 15 int64 buffers of the chunk's size and a large chunk keeps them busy.
_KENDALL_CHUNK_ELEMENTS = {"cpu": 1 << 20, "other": 1 << 22}


def saliency_map(a: torch.Tensor) -> torch.Tensor:
    """Saliency map of an attribution: ``|a|`` summed over channels and flattened.

    Args:
        a: attribution, float tensor ``(N, C, H, W)`` (the shape of the input images).

    Returns:
        Tensor ``(N, H * W)`` of the same dtype and device; differentiable with respect to ``a``.
    """
    return check_nchw(a, "a").abs().sum(1).flatten(1)


def as_maps(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a pair of maps ``(N, D)`` or attributions ``(N, C, H, W)`` and return maps ``(N, D)``."""
    check_map_pair(a, b, {2: "maps (N, D)", 4: "attributions (N, C, H, W)"})
    if a.dim() == 4:
        a, b = saliency_map(a), saliency_map(b)
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"a, b: expected a non-empty batch of non-empty maps, got shape {tuple(a.shape)}")
    for name, t in (("a", a), ("b", b)):
        if t.is_floating_point() and not _all_finite(t):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{name}: expected finite values, got {bad} NaN/inf entries")
    return a, b


def _all_finite(t: torch.Tensor) -> bool:
    """Whether every entry of the float tensor ``t`` is finite.

    CPU float32/float64 tensors are checked by numpy on the calling thread: a parallel torch check here would
    leave torch's intra-op threads spinning for milliseconds while the Kendall kernel wants those cores.
    """
    if t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64):
        return bool(np.isfinite(t.detach().numpy()).all())
    return bool(torch.isfinite(t).all())


def result_dtype(t: torch.Tensor) -> torch.dtype:
    """float64 inputs give float64 results; every other dtype gives float32."""
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def check_map_pair(a: object, b: object, kinds: dict[int, str]) -> None:
    """Validate two real-valued tensors of maps (``kinds`` as in ``check_map_tensor``) of the same shape and
    device."""
    check_map_tensor(a, "a", kinds, real=True)
    check_map_tensor(b, "b", kinds, real=True)
    check_same_shape(a, b)
    if a.device != b.device:
        raise ValueError(f"a, b: expected tensors on the same device, got {a.device} and {b.device}")


def topk_intersection(a: torch.Tensor, b: torch.Tensor, k: int) -> torch.Tensor:
    """Fraction of the ``k`` largest features of ``a`` that are also among the ``k`` largest of ``b``.

    ``|top-k(a) ∩ top-k(b)| / k`` per example, the top-k metric of the attributional-robustness papers.

    Args:
        a, b: maps ``(N, D)`` (ranked by value as given) or attributions ``(N, C, H, W)`` (converted with
            :func:`saliency_map` first). Same shape, finite values.
        k: number of top features, an integer in ``[1, D]``.

    Returns:
        Tensor ``(N,)`` with values in ``{0, 1/k, ..., 1}``; float64 for float64 input, else float32.

    Ties at the k-th largest value are resolved by ``torch.topk``, which picks one of the tied features; the
    choice is deterministic for a given input and device but otherwise unspecified.
    """
    a, b = as_maps(a, b)
    check_k(k, a.shape[1])
    with torch.no_grad():
        top_a = a.topk(k, dim=1).indices
        top_b = b.topk(k, dim=1).indices
        in_a = torch.zeros(a.shape, dtype=torch.bool, device=a.device).scatter_(1, top_a, True)
        shared = in_a.gather(1, top_b).sum(1)
    return shared.to(result_dtype(a)) / k


def order_keys(t: torch.Tensor) -> torch.Tensor:
    """Integer tensor with the order and the ties of ``t`` (integer sorts are faster than float sorts).

    Floats are mapped through their IEEE-754 bits: non-negative values keep their bits, negative ones get the
    lower bits flipped, which makes the signed integers increase with the value. ``-0.0`` is first turned into
    ``+0.0`` so the two zeros tie. Half-precision values are widened to float32 exactly.
    """
    if not t.is_floating_point():
        return t
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    t = t + 0.0
    int_dtype, bits = (torch.int64, 64) if t.dtype == torch.float64 else (torch.int32, 32)
    raw = t.view(int_dtype)
    return raw ^ ((raw >> (bits - 1)) & ((1 << (bits - 1)) - 1))


def run_starts(sorted_rows: torch.Tensor) -> torch.Tensor:
    """Boolean ``(n, D)``: True where a row-sorted tensor starts a run of equal values."""
    new_run = torch.ones(sorted_rows.shape, dtype=torch.bool, device=sorted_rows.device)
    new_run[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    return new_run


def _tied_pairs(new_run: torch.Tensor) -> torch.Tensor:
    """Tied pairs ``sum_t t (t - 1) / 2`` over the runs of length ``t`` marked by ``new_run``, per row (int64)."""
    run_id = new_run.cumsum(1) - 1
    lengths = torch.zeros_like(run_id).scatter_add_(1, run_id, torch.ones_like(run_id))
    return (lengths * (lengths - 1)).sum(1) // 2


def _count_inversions(v: torch.Tensor) -> torch.Tensor:
    """Per row, the number of pairs ``i < j`` with ``v[i] > v[j]`` for int64 values ``0 <= v < D``.

    Exact, O(D log D) work and O(D) memory per row. A pair with ``v[i] > v[j]`` is counted once, at the highest
    bit where the two values differ. Going from the top bit down, the row is kept stably sorted by the bits
    already seen, so the values sharing a prefix ``g = v >> (l + 1)`` form a contiguous group in their original
    order. At bit ``l`` a stable partition of every group (zeros first) refines that order; it moves each
    element with bit 1 right by the number of zeros after it in its group, i.e. by its inversions at this bit,
    so the level's count is ``sum(new position - old position)`` over the ones. Group boundaries come from the
    value histogram, hence every pass is a few vectorised operations over the whole batch (one prefix sum, one
    gather, one scatter, in preallocated buffers) plus work on tables of ``2 ** (L - l)`` entries.
    """
    n, d = v.shape
    levels = (d - 1).bit_length()
    inversions = torch.zeros(n, dtype=torch.int64, device=v.device)
    if levels == 0:
        return inversions
    counts = torch.zeros(n, (1 << levels) + 1, dtype=torch.int64, device=v.device)
    counts.scatter_add_(1, v + 1, torch.ones_like(v))
    below = counts.cumsum(1)  # below[:, t] = number of values < t
    pos = torch.arange(1, d + 1, device=v.device)
    x, x_next = v.clone(), torch.empty_like(v)
    shifted, bit, ones_upto, zeros_upto, pick, new_pos = (torch.empty_like(v) for _ in range(6))
    for level in reversed(range(levels)):
        step, half = 1 << (level + 1), 1 << level
        starts = below[:, ::step]  # group g occupies [starts[g], ends[g]); its zeros end at mids[g]
        mids = below[:, half::step]
        ends = starts[:, 1:]
        ones = ends - mids
        torch.bitwise_right_shift(x, level, out=shifted)  # = 2 g + bit
        torch.bitwise_and(shifted, 1, out=bit)
        torch.cumsum(bit, 1, out=ones_upto)  # ones at or before each position of the row
        # The ones of group g land on mids[g], ..., ends[g] - 1; their old positions sum to
        # (number of ones) * d - sum(ones_upto).
        landed = ((mids + ends - 1) * ones).sum(1) // 2
        inversions += landed - (ones.sum(1) * d - ones_upto.sum(1))
        if level == 0:
            break
        # With ones_before_group = number of ones in earlier groups, a zero goes to
        # ones_before_group + zeros_upto - 1 and a one to mids[g] - 1 - ones_before_group + ones_upto.
        ones_before_group = ones.cumsum(1) - ones
        table = torch.stack((ones_before_group - 1, mids - 1 - ones_before_group), dim=2).flatten(1)
        torch.gather(table, 1, shifted, out=new_pos)
        torch.sub(pos, ones_upto, out=zeros_upto)
        torch.sub(ones_upto, zeros_upto, out=pick)
        pick *= bit
        new_pos += zeros_upto
        new_pos += pick  # + ones_upto for a one, + zeros_upto for a zero
        x_next.scatter_(1, new_pos, x)
        x, x_next = x_next, x
    return inversions


def pair_counts(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Exact pair counts of each row pair of two ``(n, D)`` maps, each an int64 tensor ``(n,)``.

    Returns ``(n0, n1, n2, n3, n_d)``: all pairs ``D (D - 1) / 2``, pairs tied in ``a``, tied in ``b``, tied in
    both, and discordant pairs. Concordant pairs are ``n0 - n1 - n2 + n3 - n_d``. O(D log D) per row. On the CPU
    a compiled kernel (:mod:`attrobust._pair_counts_cpu`) does the work; elsewhere :func:`_pair_counts_torch`.
    """
    if a.device.type == "cpu":
        return pair_counts_cpu(a, b)
    return _pair_counts_torch(a, b)


def _pair_counts_torch(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """:func:`pair_counts` with vectorised torch operations over the whole batch (any device)."""
    d = a.shape[1]
    # Sort on b and take its dense ranks, then sort stably on a: the order is lexicographic in (a, b).
    b_sorted, perm = order_keys(b).sort(dim=1)
    new_b = run_starts(b_sorted)
    rank_b = new_b.cumsum(1) - 1
    a_sorted, perm = order_keys(a).gather(1, perm).sort(dim=1, stable=True)
    rank_b = rank_b.gather(1, perm)
    new_a = run_starts(a_sorted)
    new_joint = run_starts(rank_b) | new_a

    ties_a = _tied_pairs(new_a)
    ties_b = _tied_pairs(new_b)
    ties_joint = _tied_pairs(new_joint)
    # Within a run of equal a the ranks of b increase, so only pairs with a_i < a_j and b_i > b_j invert.
    discordant = _count_inversions(rank_b)
    total = torch.full_like(discordant, d * (d - 1) // 2)
    return total, ties_a, ties_b, ties_joint, discordant


def _kendall_chunk(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall tau-b (float64) of each row pair of two ``(n, D)`` maps; see :func:`kendall_tau`."""
    total, ties_a, ties_b, ties_joint, discordant = pair_counts(a, b)
    numerator = (total - ties_a - ties_b + ties_joint - 2 * discordant).double()
    denominator_a = (total - ties_a).double()
    denominator_b = (total - ties_b).double()
    tau = (numerator / denominator_a.sqrt() / denominator_b.sqrt()).clamp(-1.0, 1.0)
    constant = (denominator_a == 0) | (denominator_b == 0)
    return tau.masked_fill(constant, float("nan"))


def kendall_tau(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Kendall's tau-b rank correlation between each pair of maps, exact and with tie corrections.

    ``tau_b = (n0 - n1 - n2 + n3 - 2 n_d) / sqrt((n0 - n1) (n0 - n2))`` with ``n0 = D (D - 1) / 2`` pairs,
    ``n1`` / ``n2`` the pairs tied in ``a`` / ``b``, ``n3`` the pairs tied in both and ``n_d`` the discordant
    pairs; this is ``scipy.stats.kendalltau(a_i, b_i, variant="b").statistic`` for every row ``i``, clipped to
    [-1, 1] the same way.

    Args:
        a, b: maps ``(N, D)`` or attributions ``(N, C, H, W)`` (converted with :func:`saliency_map` first);
            same shape, finite real values, any device (CPU or CUDA). Values are only compared, so the ranking
            is exact in the input dtype.

    Returns:
        Tensor ``(N,)`` on the input's device; float64 for float64 input, else float32 (the arithmetic is
        float64 with exact int64 pair counts). A row whose map is constant in ``a`` or ``b`` (including
        ``D == 1``) has no defined correlation and gives NaN, as scipy does.

    Complexity: O(D log D) work per row and O(D) memory; rows are processed in chunks, so memory stays bounded
    for any batch size.
    """
    a, b = as_maps(a, b)
    return by_chunks(_kendall_chunk, a, b).to(result_dtype(a))


def by_chunks(
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Apply a row-wise pair kernel ``fn`` to validated maps ``(N, D)`` in row chunks (bounded memory), no autograd."""
    n, d = a.shape
    rows = max(1, _KENDALL_CHUNK_ELEMENTS["cpu" if a.device.type == "cpu" else "other"] // d)
    with torch.no_grad():
        a_d, b_d = a.detach(), b.detach()
        return torch.cat([fn(a_d[i : i + rows], b_d[i : i + rows]) for i in range(0, n, rows)])
