"""Seeding: every random stream of the pipeline (initialisation, data order, the objective's and the attacks'
random starts, sample selection, the suite's draws) is seeded by :func:`derive_seed` from the run's seed and a
tag naming the stream, so streams are independent and a stream is a pure function of ``(seed, tag)``.

Imports only the standard library.
"""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, tag: str) -> int:
    """A 63-bit seed derived from ``(seed, tag)`` (independent streams for init, data order, objective)."""
    digest = hashlib.sha256(f"{seed}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)
