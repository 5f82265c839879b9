"""Durable files: the ONE atomic write of the package and the lock of a run directory.

- :func:`atomic_write` writes a file through a temporary file of a unique name in the same directory (so two
  processes writing the same path never share a temporary file), flushes and fsyncs it, renames it over the
  target (``os.replace``: readers see the old or the new file, never a mix) and fsyncs the directory, so the
  new name survives a power cut. On any error the temporary file is removed and the target is untouched.
- :class:`DirLock` refuses a second concurrent run of one directory: ``<dir>/.lock`` is created atomically
  (written completely under a unique name, then hard-linked to ``.lock``, which fails when it exists) and holds
  the owner's pid, host and process start time. A lock whose owner is gone (same host, and the pid is not
  running, or runs a different process since the lock was taken) is stale: it is removed and taken over, so a
  killed run never leaves its directory locked. A lock taken on another host cannot be checked from here: the
  message names the file to delete once that run is known to be gone.

Imports only the standard library (a shared kernel below every layer).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["LOCK_NAME", "DirLock", "atomic_write", "atomic_write_text", "fsync_dir", "temp_name"]

LOCK_NAME = ".lock"


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<pid>.<random>.tmp`` (unique per process and call; the
    name is cut to its first 100 characters, so a name the file system allows keeps a temporary name it allows)."""
    return path.with_name(f".{path.name[:100]}.{os.getpid()}.{secrets.token_hex(6)}.tmp")


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory's entries (a new or renamed file in it) to disk; a no-op where directories cannot be
    opened (Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> Path:
    """Replace ``path`` atomically and durably by what ``write(f)`` writes into a binary file object (see the
    module docstring); creates the parent directories. Returns the path.

    A directory at ``path`` raises ``ValueError`` (before anything is written)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: expected a file path to write, got an existing directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        with tmp.open("xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of ``text`` encoded as UTF-8."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (field 22 of ``/proc/<pid>/stat``, clock ticks since boot), None where
    there is no ``/proc`` or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def _owner() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": _start_time(os.getpid())}


def _stale(owner: dict[str, Any]) -> bool:
    """True when the lock's owner is known to be gone: same host and its pid is not running, or is running
    another process (another start time)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    if not _running(pid):
        return True
    started = owner.get("started")
    return started is not None and _start_time(pid) not in (None, started)


class DirLock:
    """``with DirLock(run_dir, what="training run"):`` holds ``<run_dir>/.lock`` (see the module docstring); a
    live lock of another process raises ``ValueError`` naming its pid and host and the file to delete should
    that process be gone. Re-entrant within one process is not supported (a second lock of the same directory
    by the same process is refused too)."""

    def __init__(self, directory: str | os.PathLike[str], what: str = "run") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self._held = False

    def acquire(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock is removed once; a racing process may take it first
            if self._try_link():
                self._held = True
                return
            owner = self._read_owner()
            if owner is None:
                continue  # removed meanwhile
            if not _stale(owner):
                raise ValueError(
                    f"{self.directory}: expected no other {self.what} of this directory, got one running "
                    f"(pid {owner.get('pid')} on {owner.get('host')}, lock file {self.path}); wait for it to end, "
                    f"or delete {self.path} if that process is gone"
                )
            if self._read_owner() == owner:  # still the stale one (narrows the race with another taker)
                self.path.unlink(missing_ok=True)
        raise ValueError(f"{self.directory}: could not take the lock {self.path} (other processes keep taking it)")

    def _try_link(self) -> bool:
        tmp = temp_name(self.path)
        tmp.write_text(json.dumps(_owner()))
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.directory)
        return True

    def _read_owner(self) -> dict[str, Any] | None:
        try:
            owner = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable: treated as held (never written partially, see _try_link)
        return owner if isinstance(owner, dict) else {}

    def release(self) -> None:
        if self._held:
            self.path.unlink(missing_ok=True)
            self._held = False

    def __enter__(self) -> DirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
