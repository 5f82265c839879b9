"""The files of a training run and the state that makes it exactly resumable.

``<out_dir>/<name>/`` holds ``config.yaml``, ``log.jsonl``, ``state.pt`` (a :class:`TrainState` saved every
``checkpoint_every`` steps: model, optimiser, scheduler, the objective's generator of every process, the global
torch RNG, the step and the config) and, once the run is complete, ``model.pt``. :class:`TrainResult` is what
a call of :func:`~.train.train` gives back.

Imports the config, the distributed helpers and the models (checkpoint loading, finite-weight checks).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import models as models_lib
from .._files import atomic_write, atomic_write_text
from . import distributed
from .config import TrainConfig, from_dict, to_dict

# keys of a TrainConfig that do not change the trained weights (ignored when comparing a run with its files)
NON_RESULT_KEYS = ("out_dir", "device", "log_every", "checkpoint_every")


@dataclass(frozen=True)
class RunFiles:
    """The paths of run directory ``<out_dir>/<name>/``."""

    run_dir: Path
    model: Path
    state: Path
    log: Path

    @classmethod
    def of(cls, config: TrainConfig) -> RunFiles:
        run_dir = Path(config.out_dir) / config.name
        return cls(run_dir, run_dir / "model.pt", run_dir / "state.pt", run_dir / "log.jsonl")


@dataclass
class TrainResult:
    """Outcome of :func:`~.train.train`.

    ``model`` is in eval mode; ``model_path`` is ``<run_dir>/model.pt`` once the run is complete (None when it
    stopped early via ``stop_after``); ``reused`` says the finished checkpoint was loaded instead of training;
    ``history`` holds the mean ``loss``/``acc``/``lr`` every ``log_every`` steps of this call and ``seconds``
    the training time of the whole run (every call of a resumed run; of the original run when reused); ``test_acc`` is
    the clean accuracy on the first ``data.test_subset`` test examples (None when skipped or not complete).
    """

    model: nn.Module
    config: TrainConfig
    run_dir: Path
    model_path: Path | None
    step: int
    total_steps: int
    completed: bool
    reused: bool = False
    seconds: float = 0.0
    test_acc: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)


def result_dict(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    """The keys of a training config that decide the trained weights (without :data:`NON_RESULT_KEYS`)."""
    d = to_dict(config) if isinstance(config, TrainConfig) else dict(config)
    return {k: v for k, v in d.items() if k not in NON_RESULT_KEYS}


def check_same_run(saved: dict[str, Any] | None, config: TrainConfig, where: Path) -> None:
    """Raise ``ValueError`` when the config ``saved`` with a run's file would train other weights than ``config``."""
    if saved is None:
        return
    try:
        saved_cfg = from_dict(TrainConfig, saved)
    except ValueError as err:
        raise ValueError(f"{where}: saved run config is not readable ({err}); use force=True to retrain") from None
    if result_dict(saved_cfg) != result_dict(config):
        diff = [k for k, v in result_dict(config).items() if result_dict(saved_cfg).get(k) != v]
        raise ValueError(
            f"{where} was produced by a different configuration (differs in: {', '.join(diff)}); "
            "use force=True (--force) to retrain, or choose another run name"
        )


def reuse_finished(config: TrainConfig, files: RunFiles, device: str) -> TrainResult:
    """The finished run ``files.model`` loaded (``reused=True``), after checking it was trained by ``config``."""
    model, info = models_lib.load(files.model, map_location=device)
    check_same_run(info.get("config"), config, files.model)
    meta = info.get("meta") or {}
    steps = int(meta.get("steps", 0))
    return TrainResult(
        model=model.eval(), config=config, run_dir=files.run_dir, model_path=files.model, step=steps,
        total_steps=steps, completed=True, reused=True, seconds=float(meta.get("seconds", 0.0)),
        test_acc=meta.get("test_acc"),
    )  # fmt: skip


def _read_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file raises pickle/zip/runtime errors
        raise ValueError(f"{path}: not a readable training state ({err}); use force=True to retrain") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{path}: expected a training state dict with a 'step', got {type(state).__name__}")
    return state


@dataclass
class TrainState:
    """Everything a training run changes as it goes, at global step ``step``: what :meth:`save` writes to
    ``state.pt`` and :meth:`load` restores (exactly, on the CPU)."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    step: int = 0
    seconds: float = 0.0  # training time up to ``step``, over every call of a resumed run

    def save(self, path: Path, config: TrainConfig, ctx: distributed.Dist) -> None:
        """Write the state at ``self.step`` (rank 0 writes, after gathering every process's generator state)."""
        generators = distributed.gather(self.generator.get_state(), ctx)
        if ctx.main:
            state = {
                "step": self.step, "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generator": generators[0], "generators": generators,
                "torch_rng": torch.get_rng_state(), "config": to_dict(config), "seconds": float(self.seconds),
            }  # fmt: skip
            atomic_write(path, lambda f: torch.save(state, f))
        distributed.barrier(ctx)

    def load(self, path: Path, config: TrainConfig, ctx: distributed.Dist) -> None:
        """Restore the state saved at ``path`` by the same configuration and number of processes (else
        ``ValueError``), the global torch RNG state included."""
        state = _read_state(path)
        check_same_run(state.get("config"), config, path)
        models_lib.check_finite_weights(state["model"], f"{path} (use force=True to retrain)")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        generators = state.get("generators") or [state["generator"]]
        if len(generators) != ctx.world:
            raise ValueError(
                f"{path}: expected a state saved by {ctx.world} process(es), got {len(generators)}; "
                "resume with the same number of processes or use force=True"
            )
        self.generator.set_state(generators[ctx.rank])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(state["step"])
        self.seconds = float(state.get("seconds", 0.0))


def trim_log(path: Path, step: int) -> None:
    """Drop the records of ``log.jsonl`` logged after global step ``step`` (a run killed after its last
    checkpoint logged steps it will train again when resumed), atomically; an unreadable line ends the kept
    part (a record cut by the kill)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            break
        if not isinstance(record, dict) or not isinstance(record.get("step"), int) or record["step"] > step:
            break
        kept.append(line + "\n")
    atomic_write_text(path, "".join(kept))
