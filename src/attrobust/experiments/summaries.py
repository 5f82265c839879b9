"""Summaries of per-example columns, and the one way a number that is not finite leaves the pipeline.

- :func:`spread`: mean, std (population), median and quartiles of a float64 column (all None when empty);
- :func:`summarize`: IFIA's similarity statistics, invalid samples counted as 1.0 (the papers' table figure),
  plus the mean/std over the valid ones;
- :func:`finite_summary`: the count and spread of the finite values of a suite metric's column;
- :func:`finite_or_none` / :func:`json_safe`: NaN and inf become None (JSON has neither), in a number or in a
  nested structure.

Imports only torch and the standard library.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_QUANTILES = (0.25, 0.5, 0.75)


def spread(values: torch.Tensor) -> dict[str, float | None]:
    """``mean``, ``std`` (population), ``median``, ``q25``, ``q75`` of a float64 column ``(M,)``; None when empty."""
    out: dict[str, float | None] = {"mean": None, "std": None, "median": None, "q25": None, "q75": None}
    if values.numel():
        q = torch.quantile(values, torch.tensor(_QUANTILES, dtype=torch.float64))
        out.update(mean=float(values.mean()), std=float(values.std(unbiased=False)), median=float(q[1]),
                   q25=float(q[0]), q75=float(q[2]))  # fmt: skip
    return out


def summarize(values: torch.Tensor, valid: torch.Tensor) -> dict[str, float | None]:
    """Statistics of per-example similarities ``values (M,)`` with validity ``valid (M,)`` bool.

    ``mean``/``std``/``median``/``q25``/``q75`` are over the table figures (invalid samples counted as 1.0);
    ``valid_mean``/``valid_std`` over the valid samples only (None when there are none).
    """
    table = torch.where(valid, values.double(), torch.ones_like(values, dtype=torch.float64))
    out = spread(table)
    chosen = values.double()[valid]
    out["valid_mean"] = float(chosen.mean()) if chosen.numel() else None
    out["valid_std"] = float(chosen.std(unbiased=False)) if chosen.numel() else None
    return out


def finite_summary(values: torch.Tensor) -> dict[str, float | int | None]:
    """``count`` of the finite values of a float64 column ``(M,)`` and their :func:`spread` (NaN marks an
    example a metric does not apply to)."""
    finite = values[torch.isfinite(values)]
    return {"count": int(finite.numel()), **spread(finite)}


def finite_or_none(value: float) -> float | None:
    """``value`` as a float, or None when it is NaN or infinite."""
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """JSON-safe copy of nested dicts/lists/tuples (tuples become lists): NaN/inf floats become None."""
    if isinstance(value, float):
        return finite_or_none(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
