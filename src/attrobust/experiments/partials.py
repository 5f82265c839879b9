"""Partial results of an evaluation: what makes a killed or failed evaluation resumable.

While :func:`~.evaluate.evaluate` runs, every finished batch is written (atomically) to
``<results stem>.partial/batch-<b>.pt`` beside the results file, with ``meta.json`` naming what they belong to:
the protocol fingerprint, the checkpoint's sha256, the number of batches and of stored examples. The directory
also holds the evaluation's lock (:class:`attrobust._files.DirLock`), so two processes never write one results
file at once. Once the results file is written, the directory is removed.

``evaluate(..., resume=True)`` (``attrobust evaluate --resume``) loads the batches found and runs only the
others. Each batch seeds its own attacks from ``(seed, batch)``, so the resumed results are identical to an
uninterrupted run's (the timings aside). Partial results of another protocol, checkpoint or example count are
refused; without ``resume``, partial results are never silently thrown away: the evaluation refuses to start
until they are resumed or deleted. Batch files are read with ``torch.load(weights_only=True)`` (no pickle).

Partial results are kept by single-process evaluations (under ``torchrun`` the evaluation runs as before).

Imports only the shared file helpers and torch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._files import DirLock, atomic_write, atomic_write_text

__all__ = ["FORMAT", "Partials", "check_output", "partial_dir"]

FORMAT = "attrobust-eval-partial/2"  # 2: the IFIA batch columns hold flat_start
_META = "meta.json"


def partial_dir(out: str | Path) -> Path:
    """The partial-results directory of the results file ``out``: ``<stem>.partial`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.partial")


def _name_max(directory: Path) -> int:
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (OSError, ValueError, AttributeError):
        return 255


def check_output(out: str | Path) -> None:
    """Raise ``ValueError`` unless the results file ``out`` (and the files written beside it) can be written:
    not a directory, names the file system allows, a directory that exists or can be created and accepts files.
    Called before any work, so a bad ``--out`` never throws away a finished evaluation."""
    out = Path(out)
    if out.is_dir():
        raise ValueError(f"out: expected a file path for the results JSON, got an existing directory {out}")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"out: expected a directory that can be created, got {parent} ({err.strerror})") from None
    longest = max((out.name, f"{out.stem}.examples.npz", partial_dir(out).name), key=lambda n: len(os.fsencode(n)))
    limit = _name_max(parent)
    if len(os.fsencode(longest)) > limit:
        raise ValueError(
            f"out: expected a file name of at most {limit} bytes (with the files written beside it, such as "
            f"{longest[:40]}...), got {len(os.fsencode(out.name))} bytes: {out.name[:40]}..."
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"out: expected a writable directory, got {parent} (permission denied)")


class Partials:
    """The partial results of one evaluation (see the module docstring): ``identity`` is what they belong to
    (``protocol_fingerprint``, ``checkpoint_sha256``, ``batches``, ``examples``)."""

    def __init__(self, out: str | Path, identity: dict[str, Any]) -> None:
        self.dir = partial_dir(out)
        self.identity = {"format": FORMAT, **identity}
        self.lock = DirLock(self.dir, what="evaluation writing these results")

    def batch_path(self, b: int) -> Path:
        return self.dir / f"batch-{b:06d}.pt"

    def found(self) -> list[int]:
        """The batches stored so far."""
        if not self.dir.is_dir():
            return []
        stems = (p.stem.removeprefix("batch-") for p in self.dir.glob("batch-*.pt"))
        return sorted(int(s) for s in stems if s.isdigit())

    def open(self, resume: bool) -> None:
        """Take the lock, then check (``resume``) or refuse (not ``resume``) the partial results found, and
        write ``meta.json``. Raises ``ValueError`` naming the directory and what to do."""
        self.lock.acquire()
        try:
            found = self.found()
            if found and not resume:
                raise ValueError(
                    f"{self.dir}: holds partial results of an unfinished evaluation ({len(found)} of their batches); "
                    "expected --resume (resume=True) to continue it, or delete the directory to start over"
                )
            if found:
                self._check_meta()
            atomic_write_text(self.dir / _META, json.dumps(self.identity, indent=1))
        except BaseException:
            self.lock.release()
            raise

    def _check_meta(self) -> None:
        try:
            stored = json.loads((self.dir / _META).read_text())
        except (OSError, ValueError):
            stored = None
        if not isinstance(stored, dict):
            raise ValueError(f"{self.dir / _META}: expected the description of the partial results, got none; "
                             "delete the directory to start over")  # fmt: skip
        diff = [k for k, v in self.identity.items() if stored.get(k) != v]
        if diff:
            what = ", ".join(f"{k} {stored.get(k)!r} (this evaluation: {self.identity[k]!r})" for k in diff)
            raise ValueError(
                f"{self.dir}: expected partial results of this evaluation's protocol and checkpoint, got {what}; "
                "resume with the same checkpoint and settings, or delete the directory to start over"
            )

    def save(self, b: int, part: dict[str, Any]) -> None:
        """Store batch ``b``'s columns (numpy example arrays are stored as tensors)."""
        stored = dict(part)
        if stored.get("examples") is not None:
            stored["examples"] = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in part["examples"].items()}
        atomic_write(self.batch_path(b), lambda f: torch.save({"batch": b, "part": stored}, f))

    def load(self, batches: Iterable[int]) -> dict[int, dict[str, Any]]:
        """The stored columns of those of ``batches`` that were stored, as :meth:`save` got them."""
        out: dict[int, dict[str, Any]] = {}
        for b in batches:
            path = self.batch_path(b)
            if not path.is_file():
                continue
            try:
                stored = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as err:  # a truncated or foreign file raises pickle/zip/runtime errors
                raise ValueError(f"{path}: not a readable partial result ({err}); delete it to recompute it") from None
            if not isinstance(stored, dict) or stored.get("batch") != b or not isinstance(stored.get("part"), dict):
                raise ValueError(f"{path}: expected the partial result of batch {b}; delete it to recompute it")
            part = stored["part"]
            if part.get("examples") is not None:
                part["examples"] = {k: v.numpy() for k, v in part["examples"].items()}
            out[b] = part
        return out

    def finish(self) -> None:
        """The results are written: remove the partial results, then the lock and the directory."""
        for path in self.dir.iterdir():
            if path.name != self.lock.path.name:
                shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
        self.lock.release()
        with contextlib.suppress(OSError):  # another evaluation may have taken the directory meanwhile
            self.dir.rmdir()

    def close(self) -> None:
        """Stop (the work failed): keep the partial results, release the lock."""
        self.lock.release()
