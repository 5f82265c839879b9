"""Keep-the-best bookkeeping of the attribution attacks (IFIA, targeted manipulation).

After every step an attack judges its iterate on the ORIGINAL model; :class:`Best` keeps, per example, the
candidate with the lowest score among the allowed ones (a step that changes the label is never allowed) and the
values that came with it (the perturbed input, its similarities, the step and restart it came from).

Tensor contract: scores and masks ``(N,)``; kept values ``(N, ...)``, replaced row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Best:
    """The lowest ``score`` ``(N,)`` seen so far among allowed candidates (``inf`` until one is), and ``kept``:
    name -> ``(N, ...)`` values of that candidate (their initial values where none was allowed yet)."""

    score: torch.Tensor
    kept: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def start(cls, n: int, device: torch.device, **initial: torch.Tensor) -> Best:
        """Nothing selected yet: scores ``inf`` (float32 ``(n,)`` on ``device``), values ``initial``."""
        return cls(torch.full((n,), float("inf"), device=device), dict(initial))

    def update(self, score: torch.Tensor, allowed: torch.Tensor, **candidate: torch.Tensor | int) -> torch.Tensor:
        """Take ``candidate`` where ``allowed`` and ``score`` is strictly lower than the kept one.

        ``score`` ``(N,)``; ``allowed`` bool ``(N,)``; ``candidate`` gives a value ``(N, ...)`` (or one int for all
        examples, e.g. the step) for every kept name. Returns the bool mask ``(N,)`` of the examples that changed.
        """
        better = allowed & (score < self.score)
        self.score = torch.where(better, score, self.score)
        for name, value in candidate.items():
            old = self.kept[name]
            new = value if isinstance(value, torch.Tensor) else torch.full_like(old, value)
            self.kept[name] = torch.where(better.view(-1, *(1,) * (old.dim() - 1)), new, old)
        return better

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.kept[name]


__all__ = ["Best"]
