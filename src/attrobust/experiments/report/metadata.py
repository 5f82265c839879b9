"""Provenance of a report: the code and environment that drew it, and each result's own record (checkpoint,
dataset, examples file, timings, configurations, and the code version when the results recorded one)."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from collections.abc import Mapping
from typing import Any

import matplotlib
import numpy as np
import torch

from ..provenance import git_revision

# what a result records about itself; "provenance" is shown when the evaluation recorded one
_RUN_KEYS = ("path", "checkpoint", "checkpoint_sha256", "dataset", "examples", "created", "torch_version", "timings",
             "provenance")  # fmt: skip


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
