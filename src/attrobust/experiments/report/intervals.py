"""Confidence intervals of the report's means: the percentile bootstrap over the per-example values the results
store (never a number the results do not contain: an interval is a statistic of stored values).

:func:`bootstrap_interval` resamples the values ``RESAMPLES`` times with replacement (a numpy generator seeded
with ``SEED``, the same for every interval, so a report is reproducible) and takes the 2.5th and 97.5th
percentiles of the resampled means; :data:`METHOD` is the sentence the report prints with its tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .inputs import floats, num

LEVEL = 0.95
RESAMPLES = 2000
SEED = 0
METHOD = (
    f"Intervals: {100 * LEVEL:.0f}% percentile bootstrap of the mean over the stored per-example values "
    f"(B = {RESAMPLES} resamples with replacement, numpy generator seeded with {SEED} for every interval); "
    "'-' where the results store no per-example values or they do not reproduce the mean."
)
_CHUNK = 1 << 22  # resampled values drawn at once (bounds the memory of large evaluations)


def bootstrap_interval(values: np.ndarray) -> tuple[float, float] | None:
    """The :data:`LEVEL` percentile-bootstrap interval of the mean of ``values`` float ``(M,)`` (finite), or None
    when ``M`` is 0."""
    values = np.asarray(values, dtype=np.float64)
    m = len(values)
    if m == 0:
        return None
    rng = np.random.default_rng(SEED)
    per_chunk = max(1, _CHUNK // m)
    means = np.concatenate([
        values[rng.integers(0, m, size=(min(per_chunk, RESAMPLES - start), m))].mean(axis=1)
        for start in range(0, RESAMPLES, per_chunk)
    ])  # fmt: skip
    tail = 100 * (1 - LEVEL) / 2
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def column(values: Any) -> np.ndarray | None:
    """The finite values of a stored per-example column (numbers, booleans as 0/1, None for not applicable),
    or None when it is not a list of those."""
    if isinstance(values, list | tuple) and all(isinstance(v, bool) for v in values):
        values = [float(v) for v in values]
    out = floats(values)
    return None if out is None else out[np.isfinite(out)]


def interval_of(values: Any, mean: Any, *, percent: bool = False) -> str:
    """The interval cell of ``mean`` from its per-example ``values``: ``[low, high]`` (percentages with
    ``percent``), or ``-`` when the values are missing, empty or their mean is not ``mean`` (within 1e-9)."""
    col = column(values)
    target = num(mean)
    if col is None or not len(col) or target is None or abs(float(col.mean()) - target) > 1e-9:
        return "-"
    low, high = bootstrap_interval(col)  # type: ignore[misc]
    return f"[{100 * low:.2f}%, {100 * high:.2f}%]" if percent else f"[{low:.4f}, {high:.4f}]"
