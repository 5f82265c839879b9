"""Provenance of a report: the code and environment that drew it, and each result's own record (checkpoint,
dataset, examples file, timings, configurations, and the code version when the results recorded one)."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

# what a result records about itself; "provenance" is shown when the evaluation recorded one
_RUN_KEYS = ("path", "checkpoint", "checkpoint_sha256", "dataset", "examples", "created", "torch_version", "timings",
             "provenance")  # fmt: skip


def git_revision() -> str | None:
    """The commit of the report's code (`` (modified)`` when the work tree differs), or None outside a checkout.

    The one git probe of the report; it goes when :mod:`attrobust.experiments` has a shared provenance module."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        if rev.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return rev.stdout.strip() + (" (modified)" if dirty.returncode == 0 and dirty.stdout.strip() else "")


def report_metadata() -> dict[str, Any]:
    """Code and environment of the report: package, git revision, Python, torch, numpy, matplotlib, platform."""
    from ... import __version__  # the package's own version; attrobust/__init__ imports this package

    return {
        "attrobust": __version__,
        "git": git_revision(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "platform": platform.platform(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def run_metadata(res: Mapping[str, Any]) -> dict[str, Any]:
    """The provenance and configuration of one result (checkpoint, dataset, examples file, timings, eval and
    train config; the code version when the result recorded one)."""
    meta = {key: res.get(key) for key in _RUN_KEYS if key in res}
    meta["eval_config"] = res.get("eval_config")
    meta["train_config"] = res.get("train_config")
    return meta
