"""Compiled CPU kernel for the exact pair counts behind Kendall's tau-b and Goodman-Kruskal's gamma.

:func:`pair_counts` takes two maps ``(n, D)`` and returns, per row, the ties in ``a``, the ties in ``b``, the
pairs tied in both and the discordant pairs. Per row, each value becomes an integer order key (float bits mapped
so that integers compare like the floats, ``-0.0`` equal to ``+0.0``); two stable least-significant-digit radix
sorts of the indices, one byte at a time (a byte that is the same for the whole row is skipped), give the dense
ranks of ``b`` and the order lexicographic in ``(a, b)``, both O(D); a Fenwick tree counts the inversions of the
ranks of ``b`` in that order, O(D log D). For 32-bit inputs (float32, int32 and the narrower types widened to
them) each element travels through the sorts as one int64, key and index (then rank) packed together. Rows are
independent: they are dealt to ``torch.get_num_threads()`` threads (the kernel releases the GIL). numba compiles
the kernels on first use (about a second per input dtype; cached on disk where the package folder or numba's
cache folder is writable).

The vectorised torch version in :mod:`attrobust._ranking` computes the same counts on any device and is the
path for accelerators; the tests compare both with each other and with ``scipy.stats.kendalltau``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch


def _jit(fn: Callable) -> Callable:
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # no writable cache location: compile per process instead
        return numba.njit(nogil=True)(fn)


@_jit
def _count_bytes(hist, k, nbytes):
    """Add the low ``nbytes`` bytes of key ``k`` to the byte histograms ``hist`` (one row per byte)."""
    for p in range(nbytes):
        hist[p, (k >> (8 * p)) & 255] += 1


@_jit
def _offsets(hist, p, d):
    """Turn histogram row ``p`` into start offsets in place; False (row untouched) if one byte value holds all
    ``d`` keys, i.e. the pass would not move anything."""
    total = 0
    for v in range(256):
        c = hist[p, v]
        if c == d:
            return False
        hist[p, v] = total
        total += c
    return True


@_jit
def _fenwick_step(tree, v, d):
    """Count the earlier values ``<= v`` held by the Fenwick ``tree`` (size ``d + 1``), then add ``v``."""
    not_larger = 0
    k = v + 1
    while k > 0:
        not_larger += tree[k]
        k -= k & (-k)
    k = v + 1
    while k <= d:
        tree[k] += 1
        k += k & (-k)
    return not_larger


@_jit
def _radix_pass(keys, src, dst, hist, nbytes, d):
    """Stable LSD radix sort of the index list ``src`` by ``keys[index]``; returns (sorted, spare) buffers."""
    hist[:nbytes] = 0
    for j in range(d):
        _count_bytes(hist, keys[j], nbytes)
    for p in range(nbytes):
        if not _offsets(hist, p, d):
            continue
        shift = 8 * p
        for j in range(d):
            i = src[j]
            digit = (keys[i] >> shift) & 255
            dst[hist[p, digit]] = i
            hist[p, digit] += 1
        src, dst = dst, src
    return src, dst


@_jit
def _key(raw, bits, is_float):
    """Order key of one element: ``raw`` holds the value (an integer) or its IEEE-754 bits (a float); the key's
    low ``bits // 8`` bytes compare, as an unsigned number, like the values (``-0.0`` ties with ``+0.0``)."""
    v = np.int64(raw)
    if is_float:
        if v == -(np.int64(1) << (bits - 1)):  # -0.0
            v = np.int64(0)
        v = v ^ ((v >> 63) & ((np.int64(1) << (bits - 1)) - 1))  # negative floats: reverse their order
    if bits == 32:
        return v + (np.int64(1) << 31)
    return v ^ (np.int64(1) << 63)


@_jit
def _rows(xa, xb, float_a, float_b, out, lo, hi):
    """Fill ``out[r] = (ties_a, ties_b, ties_both, discordant)`` for rows ``lo <= r < hi``.

    ``xa``, ``xb``: ``(n, D)`` int32 or int64 arrays holding integer values or the bits of float values
    (``float_a``, ``float_b``).
    """
    d = xa.shape[1]
    bits_a = xa.itemsize * 8
    bits_b = xb.itemsize * 8
    hist = np.empty((8, 256), np.int64)
    a = np.empty(d, np.int64)
    b = np.empty(d, np.int64)
    first = np.empty(d, np.int64)
    second = np.empty(d, np.int64)
    rank_b = np.empty(d, np.int64)
    tree = np.empty(d + 1, np.int64)
    for r in range(lo, hi):
        for j in range(d):
            a[j] = _key(xa[r, j], bits_a, float_a)
            b[j] = _key(xb[r, j], bits_b, float_b)
            first[j] = j
        order, spare = _radix_pass(b, first, second, hist, bits_b // 8, d)
        # Dense ranks of b (0, 1, ...) in sorted order; ties in b: a run of t equal values adds 1 + 2 + ... + (t-1).
        ties_b = 0
        run = 0
        prev = order[0]
        rank_b[prev] = 0
        for j in range(1, d):
            cur = order[j]
            if b[cur] == b[prev]:
                rank_b[cur] = rank_b[prev]
                run += 1
                ties_b += run
            else:
                rank_b[cur] = rank_b[prev] + 1
                run = 0
            prev = cur
        # Stable sort by a of the b-sorted order: lexicographic in (a, b), so pairs tied in a never invert.
        order, spare = _radix_pass(a, order, spare, hist, bits_a // 8, d)
        tree[:] = 0
        ties_a = 0
        ties_both = 0
        run_a = 0
        run_both = 0
        discordant = 0
        for j in range(d):
            cur = order[j]
            if j > 0:
                prev = order[j - 1]
                if a[cur] == a[prev]:
                    run_a += 1
                    ties_a += run_a
                    if rank_b[cur] == rank_b[prev]:
                        run_both += 1
                        ties_both += run_both
                    else:
                        run_both = 0
                else:
                    run_a = 0
                    run_both = 0
            # discordant pairs ending here: earlier elements (smaller a) with a larger rank of b
            discordant += j - _fenwick_step(tree, rank_b[cur], d)
        out[r, 0] = ties_a
        out[r, 1] = ties_b
        out[r, 2] = ties_both
        out[r, 3] = discordant



@_jit
def _radix_hi(src, dst, hist, d):
    """Stable LSD radix sort of packed int64 values by their upper 32 bits, whose byte histograms ``hist`` holds;
    returns (sorted, spare) buffers."""
    for p in range(4):
        if not _offsets(hist, p, d):
            continue
        shift = 32 + 8 * p
        for j in range(d):
            x = src[j]
            dg = (x >> shift) & 255
            dst[hist[p, dg]] = x
            hist[p, dg] += 1
        src, dst = dst, src
    return src, dst


# Deliberate twin of ``_rows`` (the repeated tie / inversion sweep is the one copy-paste pair kept in this file):
# the two kernels read the same counts from different layouts (separate order and rank arrays there, key and rank
# packed in one int64 here), and the sweep is the innermost loop of the Kendall kernel; a shared numba helper
# would take per-element accessors or a copy into one layout, i.e. the gather or the extra pass that the packed
# layout exists to avoid. Both are tested against each other, against the torch version and against scipy.
@_jit
def _rows32(xa, xb, float_a, float_b, out, lo, hi):
    """:func:`_rows` for 32-bit inputs: each element travels as one int64, its key in the upper half and its index
    (then the rank of its b) in the lower half, so the radix passes move values instead of indices and the
    ranks of b arrive in the (a, b) order without a gather."""
    d = xa.shape[1]
    hist = np.empty((4, 256), np.int64)
    p1 = np.empty(d, np.int64)
    p2 = np.empty(d, np.int64)
    tree = np.empty(d + 1, np.int64)
    low = np.int64(0xFFFFFFFF)
    for r in range(lo, hi):
        hist[:] = 0
        for j in range(d):
            k = _key(xb[r, j], 32, float_b)
            p1[j] = (k << 32) | j
            _count_bytes(hist, k, 4)
        src, dst = _radix_hi(p1, p2, hist, d)
        hist[:] = 0
        ties_b = 0
        run = 0
        rank = np.int64(0)
        for j in range(d):
            v = src[j]
            if j > 0:
                if (v >> 32) == (src[j - 1] >> 32):
                    run += 1
                    ties_b += run
                else:
                    rank += 1
                    run = 0
            idx = v & low
            k = _key(xa[r, idx], 32, float_a)
            dst[j] = (k << 32) | rank
            _count_bytes(hist, k, 4)
        order, _ = _radix_hi(dst, src, hist, d)
        tree[:] = 0
        ties_a = 0
        ties_both = 0
        run_a = 0
        run_both = 0
        discordant = 0
        for j in range(d):
            v = order[j]
            if j > 0:
                u = order[j - 1]
                if (v >> 32) == (u >> 32):
                    run_a += 1
                    ties_a += run_a
                    if v == u:
                        run_both += 1
                        ties_both += run_both
                    else:
                        run_both = 0
                else:
                    run_a = 0
                    run_both = 0
            discordant += j - _fenwick_step(tree, v & low, d)
        out[r, 0] = ties_a
        out[r, 1] = ties_b
        out[r, 2] = ties_both
        out[r, 3] = discordant


# Thread pools by (process id, size): a forked child must not reuse its parent's pool, whose threads it lacks.
_POOLS: dict[tuple[int, int], ThreadPoolExecutor] = {}

# dtype -> (the dtype whose values or bits the kernel reads, whether they are float bits)
_AS_KERNEL_INPUT = {
    torch.float32: (torch.int32, True),
    torch.float64: (torch.int64, True),
    torch.int32: (torch.int32, False),
    torch.int64: (torch.int64, False),
}


def _kernel_input(t: torch.Tensor) -> tuple[np.ndarray, bool]:
    """A CPU map table ``(n, D)`` as the kernel reads it (a zero-copy view for float32/64 and int32/64)."""
    if t.dtype not in _AS_KERNEL_INPUT:  # float16, bfloat16, other integers: widened exactly
        if t.is_floating_point():
            t = t.float()
        else:
            t = t.to(torch.int32 if t.dtype in (torch.int8, torch.int16, torch.uint8) else torch.int64)
    view_dtype, is_float = _AS_KERNEL_INPUT[t.dtype]
    return t.contiguous().view(view_dtype).numpy(), is_float


def pair_counts(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Exact pair counts of each row pair of two CPU maps ``(n, D)`` (``D >= 1``, real, finite), int64 ``(n,)``.

    Returns ``(n0, n1, n2, n3, n_d)`` as :func:`attrobust._ranking._pair_counts` does. No torch operation runs
    between the views and the kernel threads, so idle intra-op threads do not compete with them.
    """
    n, d = a.shape
    xa, float_a = _kernel_input(a.detach())
    xb, float_b = _kernel_input(b.detach())
    out = np.zeros((n, 4), dtype=np.int64)
    kernel = _rows32 if xa.itemsize == 4 and xb.itemsize == 4 else _rows
    workers = max(1, min(torch.get_num_threads(), n))
    if workers == 1:
        kernel(xa, xb, float_a, float_b, out, 0, n)
    else:
        # Rows are dealt in small shares to whichever thread is free, the calling thread included, so a thread
        # that shares its core with another busy thread (e.g. an intra-op thread spinning after a torch op)
        # simply takes fewer shares.
        step = max(1, -(-n // (8 * workers)))
        starts = iter(range(0, n, step))
        lock = threading.Lock()

        def drain() -> None:
            while True:
                with lock:
                    lo = next(starts, None)
                if lo is None:
                    return
                kernel(xa, xb, float_a, float_b, out, lo, min(lo + step, n))

        key = (os.getpid(), workers)
        pool = _POOLS.get(key)
        if pool is None:
            pool = _POOLS[key] = ThreadPoolExecutor(workers - 1, thread_name_prefix="attrobust-pairs")
        jobs = [pool.submit(drain) for _ in range(workers - 1)]
        drain()
        for job in jobs:
            job.result()
    counts = torch.from_numpy(out)
    total = torch.full((n,), d * (d - 1) // 2, dtype=torch.int64)
    return total, counts[:, 0], counts[:, 1], counts[:, 2], counts[:, 3]
