"""The pieces the ``attrobust`` commands share: their common options, the option-to-config-key table
(:data:`FLAG_KEYS`), the evaluation config of a command line (:func:`eval_config`) and the error wrapper
(:func:`friendly`) that turns an anticipated error into one line ``error: ...`` and exit code 2.
:mod:`attrobust.cli` defines the commands and re-exports these names."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from .experiments.config import EvalConfig, apply_overrides, merge, merge_yaml
from .experiments.protocol import eval_defaults
from .experiments.results.tables import escape_controls

__all__ = [
    "ATTACK_CHOICES",
    "FLAG_KEYS",
    "DbOption",
    "EpsOption",
    "EvalConfigOption",
    "KOption",
    "NOption",
    "NoDbOption",
    "QuietOption",
    "SetOption",
    "StepSizeOption",
    "db_arg",
    "error_message",
    "eval_config",
    "flag_overrides",
    "friendly",
]

F = TypeVar("F", bound=Callable[..., Any])

ATTACK_CHOICES = ("all", "ifia", "pgd", "none")

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config value: dotted.key=value (value parsed as YAML); repeatable."),
]
DbOption = Annotated[
    Path | None, typer.Option("--db", help="Results database (default: $ATTROBUST_DB, else <runs root>/attrobust.db).")
]
NoDbOption = Annotated[bool, typer.Option("--no-db", help="Do not record the result in the results database.")]
# options that several commands share
# --num-samples: torchrun's own parser reads every option of the command line and refuses --n as an ambiguous
# prefix of its --nnodes/--nproc-per-node before attrobust runs; --n is kept for plain runs
NOption = Annotated[int | None, typer.Option(
    "--num-samples", "--n", help="Number of test samples (under torchrun: --num-samples; torchrun rejects --n).")]
EpsOption = Annotated[float | None, typer.Option(help="l_inf budget of both PGD and IFIA (pixels).")]
StepSizeOption = Annotated[float | None, typer.Option(help="Step size of both PGD and IFIA.")]
KOption = Annotated[int | None, typer.Option(
    help="IFIA top-k size, attacked and reported (--set ifia.k=A --set ifia.eval_k=R for different ones).")]
EvalConfigOption = Annotated[Path | None, typer.Option(help="Evaluation config (YAML, partial).")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


def db_arg(db: Path | None, no_db: bool) -> Path | bool | None:
    """The ``db`` argument of the pipeline from ``--db``/``--no-db`` (both given: ``ValueError``)."""
    if db is not None and no_db:
        raise ValueError(f"--db/--no-db: expected at most one of them, got --db {db} and --no-db")
    return False if no_db else db


# the options of `evaluate` and `audit` that set evaluation config keys, and the keys each one sets
# (--eps and --step-size set PGD and IFIA alike); --set KEY=VALUE reaches every other key
FLAG_KEYS: dict[str, tuple[str, ...]] = {
    "n": ("n",),
    "batch_size": ("batch_size",),
    "eps": ("pgd.eps", "ifia.eps"),
    "step_size": ("pgd.step_size", "ifia.step_size"),
    "pgd_steps": ("pgd.steps",),
    "attribution": ("ifia.attribution",),
    "k": ("ifia.k", "ifia.eval_k"),  # one k for the attack and the reported intersection, whatever the preset
    "steps": ("ifia.steps",),
    "ig_steps": ("ifia.ig_steps",),
    "beta": ("ifia.beta",),
    "restarts": ("ifia.restarts",),
}


def flag_overrides(metrics: str | None = None, **flags: Any) -> dict[str, Any]:
    """The nested config mapping of the option values given (None: not given), through :data:`FLAG_KEYS`;
    ``metrics`` is ``all`` or comma-separated names."""
    out: dict[str, Any] = {}
    for flag, value in flags.items():
        if value is None:
            continue
        for key in FLAG_KEYS[flag]:
            *sections, last = key.split(".")
            node = out
            for section in sections:
                node = node.setdefault(section, {})
            node[last] = value
    if metrics is not None:
        out["metrics"] = [m.strip() for m in metrics.split(",") if m.strip()]
    return out


def eval_config(dataset: str | None, config: Path | None, sets: list[str], flags: dict[str, Any]) -> EvalConfig:
    """The evaluation config of the command line, in order: the paper defaults of ``dataset``, the YAML file
    ``config``, the ``--set`` overrides, the options (:func:`flag_overrides`)."""
    cfg = eval_defaults(dataset)
    if config is not None:
        cfg = merge_yaml(cfg, config)
    return merge(apply_overrides(cfg, sets), flags)


def error_message(err: BaseException) -> str:
    """The one line printed for an anticipated error: its message and notes (e.g. where an evaluation's
    finished batches are kept), control characters escaped; an ``OSError`` from the system (no message of ours)
    as ``<what went wrong>: <file>``."""
    if isinstance(err, OSError) and err.strerror and len(err.args) <= 2:
        text = f"{err.strerror}: {err.filename}" if err.filename is not None else err.strerror
    else:
        text = str(err)
    return escape_controls("; ".join([text, *getattr(err, "__notes__", [])]))


def friendly(fn: F) -> F:
    """Turn the anticipated errors (``ValueError``: bad input; ``OSError``: a missing, unreadable or unwritable
    file, a name too long, a full disk) into ``error: <message>`` on stderr and exit code 2. Any other exception
    is a bug and keeps its traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ValueError, OSError) as err:
            typer.echo(f"error: {error_message(err)}", err=True)
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]
