"""The trainer: one loop for every objective, seeded, checkpointed and exactly resumable.

Data order: epoch ``e`` visits the training set in the order of ``torch.randperm`` drawn from a generator seeded
from ``(seed, e)``, in batches of ``batch_size`` (the last partial batch is dropped, so an epoch has
``len(train set) // batch_size`` steps). The batch of global step ``s`` is therefore a pure function of
``(seed, s)``, and a run resumed at any step (mid-epoch included) sees the same batches as an uninterrupted one.

Randomness of the objective (e.g. the PGD random start of ``pgd_at``) comes from the trainer's generator
(seeded from ``seed``), passed as ``objective(model, x, y, generator=...)``; an objective with a schedule
(a ``set_step`` attribute) is told the global step before every call. The generator's state, the global torch
RNG state (dropout), the model, optimiser, scheduler and step (a :class:`~.checkpointing.TrainState`) are saved
in ``<out_dir>/<name>/state.pt`` every ``checkpoint_every`` steps. On CPU, ``train(config, resume=True)`` after
an interruption ends with weights identical to an uninterrupted run. A run that trained is recorded in the
results database through :mod:`.pipeline` (this module never imports the store).

The learning rate is set by a ``LambdaLR`` scheduler stepped after every optimiser step; its factor is a
function of the progress in whole epochs (``step // steps_per_epoch``) or in steps, as documented on
:class:`~attrobust.experiments.config.OptimConfig`.

Under ``torchrun`` (see :mod:`.distributed`) ``batch_size`` is the global batch: each of the ``W`` processes
trains on its ``batch_size / W`` slice of the step's batch, gradients are averaged over the processes, and rank
0 writes every file. With the same global batch the run follows the single-process one up to float rounding.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as data_lib
from .. import models as models_lib
from .. import objectives as objectives_lib
from .._files import DirLock
from ..attacks import model_mode
from ..data import ImageDataset
from . import distributed
from .checkpointing import RunFiles, TrainResult, TrainState, reuse_finished, trim_log
from .config import OptimConfig, TrainConfig, save_yaml, to_dict
from .pipeline import record_train_result
from .provenance import check_device
from .seeding import derive_seed

__all__ = [
    "TrainResult",
    "build_model",
    "clean_accuracy",
    "create_objective",
    "derive_seed",
    "epoch_permutation",
    "init_weights",
    "load_train_data",
    "lr_factor",
    "make_optimizer",
    "train",
]


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The visiting order ``(n,)`` int64 of epoch ``epoch`` (a pure function of ``(seed, epoch, n)``)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, f"epoch:{epoch}")))


def lr_factor(optim: OptimConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Multiplier of ``optim.lr`` used for global step ``step`` (0-based); see :class:`OptimConfig`."""
    t = step if optim.milestone_unit == "step" else step // steps_per_epoch
    factors = optim.gamma if isinstance(optim.gamma, list) else [optim.gamma] * len(optim.milestones)
    if optim.schedule == "step":
        return factors[0] ** (t // optim.milestones[0])
    if optim.schedule == "multistep":
        return float(math.prod(f for m, f in zip(optim.milestones, factors, strict=True) if t >= m))
    if optim.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    return 1.0


def make_optimizer(optim: OptimConfig, params: Any) -> torch.optim.Optimizer:
    """``torch.optim.Adam`` or ``SGD`` (momentum, nesterov) with ``optim``'s lr and weight decay."""
    if optim.name == "adam":
        return torch.optim.Adam(params, lr=optim.lr, weight_decay=optim.weight_decay)
    if optim.nesterov and optim.momentum <= 0:
        raise ValueError(f"optim.nesterov: expected momentum > 0 with nesterov, got momentum={optim.momentum}")
    return torch.optim.SGD(
        params, lr=optim.lr, momentum=optim.momentum, weight_decay=optim.weight_decay, nesterov=optim.nesterov
    )


def load_train_data(config: TrainConfig, split: str = "train") -> ImageDataset:
    """The run's dataset split, cut to ``data.train_subset`` / ``data.test_subset`` first examples; the training
    split then balanced by ``data.balance_by_augmentation`` (augmentations drawn from ``(seed, "balance")``)."""
    ds = config.data.load(split)
    limit = config.data.train_subset if split == "train" else config.data.test_subset
    if limit is not None and limit < len(ds):
        ds = ds.subset(torch.arange(limit))
    if split == "train" and config.data.balance_by_augmentation is not None:
        generator = torch.Generator().manual_seed(derive_seed(config.seed, "balance"))
        ds = data_lib.balance_by_augmentation(ds, generator=generator, **config.data.balance_by_augmentation)
    return ds


def build_model(config: TrainConfig, ds: ImageDataset) -> nn.Module:
    """``models.create`` for the dataset's classes, channels and size, initialised from ``seed``."""
    c, h, w = ds.shape
    if h != w:
        raise ValueError(f"data: expected square images, got {h}x{w}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "init"))
        model = models_lib.create(config.model.name, ds.num_classes, in_channels=c, input_size=h, **config.model.kwargs)
    if config.init is not None:
        init_weights(model, config.init)
    return model


def init_weights(model: nn.Module, source: str | Path) -> None:
    """Copy the weights of the checkpoint ``source`` (a file, or a run directory holding ``model.pt``) into
    ``model``; a missing file or a different architecture raises ``ValueError`` naming the mismatch.

    The one difference allowed is smoothing blocks that ``model`` adds to the checkpoint's architecture (its
    ``spec["smoothing"]`` extends the checkpoint's): every other weight is copied and the new blocks keep their
    initialisation, so a trained network can be fine-tuned with feature-map smoothing inserted."""
    path = Path(source)
    if path.is_dir():
        path = path / "model.pt"
    if not path.is_file():
        raise ValueError(f"init: expected a checkpoint file or a run directory with model.pt, got {str(source)!r}")
    trained, _ = models_lib.load(path)
    ours, theirs = dict(model.spec), dict(trained.spec)
    added = ours.pop("smoothing", []), theirs.pop("smoothing", [])
    if ours != theirs or added[0][: len(added[1])] != added[1]:
        raise ValueError(f"init: expected a checkpoint of the architecture {model.spec}, got {trained.spec} ({path})")
    missing, unexpected = model.load_state_dict(trained.state_dict(), strict=False)
    if unexpected or any(".smooth_" not in f".{k}" for k in missing):
        raise ValueError(f"init: {path} does not fit this model (missing {missing}, unexpected {unexpected})")


def create_objective(name: str, params: dict[str, Any]) -> Callable[..., Any]:
    """``objectives.create(name, **params)``; a bad parameter raises ``ValueError`` naming its config key
    (``objective.params.<key>``), found by building the objective with each parameter alone."""
    try:
        return objectives_lib.create(name, **params)
    except (ValueError, TypeError) as err:
        culprits = [k for k, v in params.items() if not _builds(name, k, v)]
        where = f"objective.params.{culprits[0]} = {params[culprits[0]]!r}" if culprits else "objective"
        raise ValueError(f"{where}: {err}") from None


def _builds(name: str, key: str, value: Any) -> bool:
    try:
        objectives_lib.create(name, **{key: value})
    except (ValueError, TypeError):
        return False
    return True


@torch.inference_mode()
def clean_accuracy(model: nn.Module, ds: ImageDataset, batch_size: int = 500, device: str = "cpu") -> float:
    """Fraction of ``ds`` that ``model`` (in eval mode) classifies correctly."""
    correct = 0
    with model_mode(model, "eval"):  # every submodule's own flag comes back (e.g. a frozen batch norm)
        for i in range(0, len(ds), batch_size):
            x = ds.images[i : i + batch_size].to(device)
            correct += int((model(x).argmax(1).cpu() == ds.labels[i : i + batch_size]).sum())
    return correct / max(len(ds), 1)




def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    dataset: ImageDataset | None = None,
    db: str | Path | bool | None = None,
) -> TrainResult:
    """Train ``config.model`` with ``config.objective`` and write the run directory ``<out_dir>/<name>/``.

    Args:
        config: the run (see :class:`TrainConfig`); its YAML is written to ``config.yaml``.
        resume: continue from ``state.pt`` when it exists (exact on CPU); without it an unfinished run restarts.
        force: retrain from scratch even when ``model.pt`` exists (existing files are replaced).
        progress: show a tqdm bar with the running loss/accuracy.
        stop_after: stop (and checkpoint) once this global step is reached, without writing ``model.pt``;
            for interrupting a run on purpose (``train(..., resume=True)`` continues it).
        dataset: use this training set instead of loading ``config.data`` (tests).
        db: results database recording a run that trained (completed or stopped): a path, or None for
            ``$ATTROBUST_DB`` / ``<out_dir>/attrobust.db``, or False for none (see :mod:`.pipeline`).

    When ``model.pt`` already exists and ``force`` is false, the finished model is loaded and returned without
    training (``reused=True``); a run directory written by a different configuration raises ``ValueError``.
    Batches are float ``(batch_size, C, H, W)`` in [0, 1] with int64 labels; the model is in train mode while
    training and returned in eval mode.
    """
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after: expected an integer >= 1 or None, got {stop_after!r}")
    ctx = distributed.context(config.device)
    if config.batch_size % ctx.world:
        raise ValueError(
            f"batch_size: expected a multiple of the {ctx.world} processes (the global batch is split evenly), "
            f"got {config.batch_size}"
        )
    check_device(config.device)
    files = RunFiles.of(config)
    lock = DirLock(files.run_dir, what="training run") if ctx.main else contextlib.nullcontext()
    with lock:
        if force and ctx.main:
            for p in (files.model, files.state, files.log):
                p.unlink(missing_ok=True)
        distributed.barrier(ctx)
        if files.model.exists():
            return reuse_finished(config, files, ctx.device(config.device))
        run = _prepare(config, dataset, ctx, files)
        state = _initial_state(run)
        _open_run_dir(run, resume)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(config.seed, "global"))
            if resume and files.state.exists():
                state.load(files.state, config, ctx)
                if ctx.main:
                    trim_log(files.log, state.step)
            distributed.barrier(ctx)
            end = run.total if stop_after is None else max(state.step, min(run.total, stop_after))
            history = _loop(run, state, end, progress and ctx.main)
            state.step = end
            state.save(files.state, config, ctx)
        result = _finish(run, state, history, state.seconds, own_data=dataset is None)
        if ctx.main:
            record_train_result(result, db)
        distributed.barrier(ctx)
    return result


@dataclass(frozen=True)
class _Run:
    """What stays fixed while a run trains: its config, processes, files, objective and data."""

    config: TrainConfig
    ctx: distributed.Dist
    device: str
    files: RunFiles
    objective: Callable[..., tuple[torch.Tensor, dict[str, float]]]
    ds: ImageDataset
    steps_per_epoch: int
    total: int


def _prepare(config: TrainConfig, dataset: ImageDataset | None, ctx: distributed.Dist, files: RunFiles) -> _Run:
    """The run's objective, training set (``dataset``, else loaded from ``config.data``) and length."""
    objective = create_objective(config.objective.name, config.objective.params)
    ds = dataset if dataset is not None else load_train_data(config, "train")
    steps_per_epoch = len(ds) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size: expected at most the training set size {len(ds)}, got {config.batch_size}")
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    return _Run(config, ctx, ctx.device(config.device), files, objective, ds, steps_per_epoch, total)


def _initial_state(run: _Run) -> TrainState:
    """The seeded model (broadcast from rank 0), optimiser, scheduler and objective generator at step 0."""
    config, ctx = run.config, run.ctx
    model = build_model(config, run.ds).to(run.device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    distributed.broadcast_parameters(model, ctx)
    optimizer = make_optimizer(config.optim, model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config.optim, s, run.steps_per_epoch, run.total)
    )
    tag = f"objective/{ctx.rank}" if ctx.active else "objective"
    generator = torch.Generator(device=run.device).manual_seed(derive_seed(config.seed, tag))
    return TrainState(model, optimizer, scheduler, generator)


def _open_run_dir(run: _Run, resume: bool) -> None:
    """(Rank 0) create the run directory, clear an unfinished run's state and log unless it resumes, and write
    ``config.yaml``; every process waits for it."""
    files = run.files
    if run.ctx.main:
        files.run_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and files.state.exists()):
            files.state.unlink(missing_ok=True)
            files.log.unlink(missing_ok=True)
        save_yaml(run.config, files.run_dir / "config.yaml")
    distributed.barrier(run.ctx)


def _finish(
    run: _Run, state: TrainState, history: list[dict[str, float]], seconds: float, own_data: bool
) -> TrainResult:
    """The model in eval mode and, when the run is complete, its clean test accuracy (on its own data, not on
    a dataset handed to :func:`train`) and ``model.pt`` (rank 0 writes, every process gets the accuracy)."""
    config, ctx, model = run.config, run.ctx, state.model
    model.eval()
    completed = state.step >= run.total
    result = TrainResult(
        model=model, config=config, run_dir=run.files.run_dir, model_path=None, step=state.step,
        total_steps=run.total, completed=completed, seconds=seconds, history=history,
    )  # fmt: skip
    if completed:
        if ctx.main:
            if config.data.test_subset != 0 and own_data:
                result.test_acc = clean_accuracy(model, load_train_data(config, "test"), device=run.device)
            models_lib.save(model, run.files.model, config=to_dict(config), steps=state.step, seconds=seconds,
                            test_acc=result.test_acc)  # fmt: skip
        result.test_acc = distributed.broadcast(result.test_acc, ctx)
        result.model_path = run.files.model
    return result


def _check_weights_after(step: int, lr: float, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Stop before anything of global step ``step`` (0-based) is saved when its update left non-finite weights
    or buffers (``state.pt`` keeps the last good checkpoint; ``model.pt`` is not written)."""
    bad = models_lib.first_nonfinite(weights)
    if bad is not None:
        raise ValueError(
            f"training diverged: expected finite weights after the update of step {step}, got {bad[1]} NaN/inf "
            f"entries in {bad[0]!r} (learning rate {lr:g}); nothing of this step was saved"
        )


def _batch(run: _Run, step: int, perm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's slice ``[rank * b, (rank + 1) * b)`` (``b = batch_size / world``) of global step
    ``step``'s batch under the epoch's permutation ``perm``: images ``(b, C, H, W)`` and labels ``(b,)``."""
    config, ctx = run.config, run.ctx
    i = step % run.steps_per_epoch
    local = config.batch_size // ctx.world
    idx = perm[i * config.batch_size : (i + 1) * config.batch_size][ctx.rank * local : (ctx.rank + 1) * local]
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    return run.ds.images[idx].to(run.device).contiguous(memory_format=layout), run.ds.labels[idx].to(run.device)


def _step(
    run: _Run,
    state: TrainState,
    step: int,
    batch: tuple[torch.Tensor, torch.Tensor],
    params: list[nn.Parameter],
    weights: list[tuple[str, torch.Tensor]],
    autocast: contextlib.AbstractContextManager[Any],
) -> tuple[float, dict[str, Any]]:
    """One optimiser step of global step ``step`` on ``batch`` (``x (b, C, H, W)``, ``y (b,)``): the objective's
    loss under ``autocast``, gradients of ``params`` averaged over the processes, the update (``weights``, views
    of the parameters and buffers, checked finite) and the scheduler step. Returns the learning rate used and
    the objective's logs."""
    model, optimizer = state.model, state.optimizer
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    if (set_step := getattr(run.objective, "set_step", None)) is not None:
        set_step(step)
    with autocast:
        loss, logs = run.objective(model, *batch, generator=state.generator)
    if not torch.isfinite(loss):
        raise ValueError(f"training diverged: expected a finite loss, got {float(loss.detach())} at step {step}")
    loss.backward()
    distributed.average_gradients(params, run.ctx)
    optimizer.step()
    _check_weights_after(step, lr, weights)
    state.scheduler.step()
    return lr, logs


def _loop(run: _Run, state: TrainState, end: int, progress: bool) -> list[dict[str, float]]:
    """Run global steps ``state.step .. end-1`` (checkpointing every ``checkpoint_every``); returns the logged
    history (window means, averaged over the processes too). ``state.seconds`` accumulates the seconds spent,
    so a resumed run counts the time of every call."""
    config = run.config
    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    count = 0
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.int64)
    t0, before = time.perf_counter(), state.seconds
    bar = tqdm(total=end, initial=state.step, desc=config.name, unit="step", disable=not progress,
               dynamic_ncols=True)  # fmt: skip
    state.model.train()
    params = [p for p in state.model.parameters() if p.requires_grad]
    weights = list(state.model.state_dict().items())  # views of the parameters and buffers, updated in place
    autocast = (
        torch.autocast(torch.device(run.device).type, dtype=torch.bfloat16)
        if config.autocast == "bf16"
        else contextlib.nullcontext()
    )
    for step in range(state.step, end):
        epoch = step // run.steps_per_epoch
        if epoch != perm_epoch:
            perm_epoch, perm = epoch, epoch_permutation(config.seed, epoch, len(run.ds))
        lr, logs = _step(run, state, step, _batch(run, step, perm), params, weights, autocast)
        for key, value in logs.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        count += 1
        done = step + 1
        if done % config.log_every == 0 or done == end:
            record = {"step": done, "epoch": done / run.steps_per_epoch, "lr": lr}
            record.update(distributed.mean_over_ranks({k: v / count for k, v in sums.items()}, run.ctx))
            record["seconds"] = before + time.perf_counter() - t0  # of the whole run, resumed calls included
            history.append(record)
            if run.ctx.main:
                with run.files.log.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss", "acc") if k in record})
            sums, count = {}, 0
        if done % config.checkpoint_every == 0 and done < end:
            state.step, state.seconds = done, before + time.perf_counter() - t0
            state.save(run.files.state, config, run.ctx)
        bar.update(1)
    bar.close()
    state.seconds = before + time.perf_counter() - t0
    return history
