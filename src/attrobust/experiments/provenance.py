"""Provenance: what produced a result. File hashes (which checkpoint), the git state of the code, the package
version and the machine. The ONE git probe of the package lives here (read-only git commands, a 10 s timeout,
any failure gives None).

Imports only the standard library, torch (the machine's facts) and the package version.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from .. import __version__

# the package directory (``<checkout>/src/attrobust`` in a source checkout)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file (identifies the checkpoint a result belongs to)."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def git_state(package_dir: str | Path) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout holding ``package_dir`` as ``<top>/src/<package>``, else
    ``(None, None)`` (an installed package, no git, any git error). Read-only git commands."""
    package_dir = Path(package_dir).resolve()
    top = _git(package_dir, "rev-parse", "--show-toplevel")
    if top is None or top.returncode != 0 or not top.stdout.strip():
        return None, None
    if (Path(top.stdout.strip()) / "src" / package_dir.name).resolve() != package_dir:
        return None, None  # a package installed inside somebody else's repository
    head = _git(package_dir, "rev-parse", "HEAD")
    if head is None or head.returncode != 0:
        return None, None
    diff = _git(package_dir, "diff", "--quiet", "HEAD", "--")
    dirty = None if diff is None or diff.returncode not in (0, 1) else diff.returncode == 1
    return head.stdout.strip(), dirty


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, Any]:
    """``{"version": package version, "git_commit": str | None, "git_dirty": bool | None}`` of this process."""
    commit, dirty = git_state(PACKAGE_DIR)
    return {"version": __version__, "git_commit": commit, "git_dirty": dirty}


def git_revision() -> str | None:
    """The code's git commit as one string, ``"<sha> (modified)"`` when the checkout has uncommitted changes to
    tracked files; None outside a git checkout (see :func:`git_state`)."""
    code = code_version()
    if code["git_commit"] is None:
        return None
    return code["git_commit"] + (" (modified)" if code["git_dirty"] else "")


@functools.lru_cache(maxsize=8)
def machine_info(device: str | None = None) -> dict[str, Any]:
    """Platform, python, torch version, cpu count, torch threads, host name and the CUDA device's name (when
    ``device`` is a CUDA device, or CUDA is available and ``device`` is None)."""
    cuda = None
    dev = str(device) if device is not None else None
    with contextlib.suppress(Exception):  # a broken driver must not lose the result
        if torch.cuda.is_available() and (dev is None or dev.startswith("cuda")):
            cuda = torch.cuda.get_device_name(torch.device(dev) if dev else None)
    return {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "host": platform.node(),
        "device": dev,
        "cuda_device": cuda,
    }


def check_device(device: str, name: str = "device") -> str:
    """``device`` when this machine has it, else ``ValueError`` naming ``name``: a string torch does not parse
    (``banana``), a CUDA device on a torch built without CUDA or with no GPU visible (or an index past the GPUs
    present), an unavailable MPS device. Checked before any work (loading a checkpoint onto a missing device
    would fail deep inside ``torch.load``)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"{name}: expected a torch device such as 'cpu', 'cuda' or 'cuda:1', got {device!r}") from None
    if dev.type == "cpu":
        return device
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "is built without CUDA" if torch.version.cuda is None else "sees no CUDA GPU"
            raise ValueError(f"{name}: expected a device of this machine, got {device!r}, but this torch "
                             f"({torch.__version__}) {why}; use 'cpu'")  # fmt: skip
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}: expected cuda:0 .. cuda:{torch.cuda.device_count() - 1}, got {device!r}")
        return device
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise ValueError(f"{name}: expected 'cpu' or an available accelerator, got {device!r} (not available here)")
    return device
