"""The table of attribution methods by name.

Each method module registers its public functions here (``@ATTRIBUTIONS.register(name)``), so this module imports
nothing of the package and every method module may look names up (SmoothGrad resolves its ``base`` by name).
Importing :mod:`attrobust.attributions` imports every method module, so the table is complete whenever a name is
looked up.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .._registry import Registry

Attribution = Callable[..., torch.Tensor]

ATTRIBUTIONS: Registry[Attribution] = Registry("attribution")


def get_attribution(name: str) -> Attribution:
    """The attribution function registered as ``name`` (``ValueError`` listing the valid names otherwise)."""
    return ATTRIBUTIONS.get(name)


__all__ = ["ATTRIBUTIONS", "Attribution", "get_attribution"]
