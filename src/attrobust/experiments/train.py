"""The trainer: one loop for every objective, seeded, checkpointed and exactly resumable.

Data order: epoch ``e`` visits the training set in the order of ``torch.randperm`` drawn from a generator seeded
from ``(seed, e)``, in batches of ``batch_size`` (the last partial batch is dropped, so an epoch has
``len(train set) // batch_size`` steps). The batch of global step ``s`` is therefore a pure function of
``(seed, s)``, and a run resumed at any step (mid-epoch included) sees the same batches as an uninterrupted one.

Randomness of the objective (e.g. the PGD random start of ``pgd_at``) comes from the trainer's generator
(seeded from ``seed``), passed as ``objective(model, x, y, generator=...)``; an objective with a schedule
(a ``set_step`` attribute) is told the global step before every call. The generator's state, the global torch
RNG state (dropout), the model, optimiser, scheduler and step are saved in ``<out_dir>/<name>/state.pt`` every
``checkpoint_every`` steps. On CPU, ``train(config, resume=True)`` after an interruption ends with weights
identical to an uninterrupted run.

The learning rate is set by a ``LambdaLR`` scheduler stepped after every optimiser step; its factor is a
function of the progress in whole epochs (``step // steps_per_epoch``) or in steps, as documented on
:class:`~attrobust.experiments.config.OptimConfig`.

Under ``torchrun`` (see :mod:`.distributed`) ``batch_size`` is the global batch: each of the ``W`` processes
trains on its ``batch_size / W`` slice of the step's batch, gradients are averaged over the processes, and rank
0 writes every file. With the same global batch the run follows the single-process one up to float rounding.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as data_lib
from .. import models as models_lib
from .. import objectives as objectives_lib
from ..data import ImageDataset
from . import distributed
from .config import OptimConfig, TrainConfig, from_dict, save_yaml, to_dict

# keys of a TrainConfig that do not change the trained weights (ignored when comparing a run with its files)
_NON_RESULT_KEYS = ("out_dir", "device", "log_every", "checkpoint_every")


@dataclass
class TrainResult:
    """Outcome of :func:`train`.

    ``model`` is in eval mode; ``model_path`` is ``<run_dir>/model.pt`` once the run is complete (None when it
    stopped early via ``stop_after``); ``reused`` says the finished checkpoint was loaded instead of training;
    ``history`` holds the mean ``loss``/``acc``/``lr`` every ``log_every`` steps of this call and ``seconds``
    the training time of this call (of the original run when reused); ``test_acc`` is
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


def derive_seed(seed: int, tag: str) -> int:
    """A 63-bit seed derived from ``(seed, tag)`` (independent streams for init, data order, objective)."""
    digest = hashlib.sha256(f"{seed}:{tag}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


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


def _result_dict(config: TrainConfig | dict[str, Any]) -> dict[str, Any]:
    d = to_dict(config) if isinstance(config, TrainConfig) else dict(config)
    return {k: v for k, v in d.items() if k not in _NON_RESULT_KEYS}


def _check_same_run(saved: dict[str, Any] | None, config: TrainConfig, where: Path) -> None:
    if saved is None:
        return
    try:
        saved_cfg = from_dict(TrainConfig, saved)
    except ValueError as err:
        raise ValueError(f"{where}: saved run config is not readable ({err}); use force=True to retrain") from None
    if _result_dict(saved_cfg) != _result_dict(config):
        diff = [k for k, v in _result_dict(config).items() if _result_dict(saved_cfg).get(k) != v]
        raise ValueError(
            f"{where} was produced by a different configuration (differs in: {', '.join(diff)}); "
            "use force=True (--force) to retrain, or choose another run name"
        )


def load_train_data(config: TrainConfig, split: str = "train") -> ImageDataset:
    """The run's dataset split, cut to ``data.train_subset`` / ``data.test_subset`` first examples."""
    ds = data_lib.load(config.data.name, split, config.data.data_dir, **config.data.kwargs)
    limit = config.data.train_subset if split == "train" else config.data.test_subset
    if limit is not None and limit < len(ds):
        ds = ds.subset(torch.arange(limit))
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


@torch.inference_mode()
def clean_accuracy(model: nn.Module, ds: ImageDataset, batch_size: int = 500, device: str = "cpu") -> float:
    """Fraction of ``ds`` that ``model`` (in eval mode) classifies correctly."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(ds), batch_size):
        x = ds.images[i : i + batch_size].to(device)
        correct += int((model(x).argmax(1).cpu() == ds.labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(len(ds), 1)


def _save_state(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_state(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file raises pickle/zip/runtime errors
        raise ValueError(f"{path}: not a readable training state ({err}); use force=True to retrain") from None
    if not isinstance(state, dict) or "step" not in state:
        raise ValueError(f"{path}: expected a training state dict with a 'step', got {type(state).__name__}")
    return state


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
            ``$ATTROBUST_DB`` / ``<out_dir>/attrobust.db``, or False for none (see ``experiments.store``).

    When ``model.pt`` already exists and ``force`` is false, the finished model is loaded and returned without
    training (``reused=True``); a run directory written by a different configuration raises ``ValueError``.
    Batches are float ``(batch_size, C, H, W)`` in [0, 1] with int64 labels; the model is in train mode while
    training and returned in eval mode.
    """
    run_dir = Path(config.out_dir) / config.name
    model_path, state_path, log_path = run_dir / "model.pt", run_dir / "state.pt", run_dir / "log.jsonl"
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int) or stop_after < 1):
        raise ValueError(f"stop_after: expected an integer >= 1 or None, got {stop_after!r}")
    ctx = distributed.context(config.device)
    device = ctx.device(config.device)
    if config.batch_size % ctx.world:
        raise ValueError(
            f"batch_size: expected a multiple of the {ctx.world} processes (the global batch is split evenly), "
            f"got {config.batch_size}"
        )

    if force and ctx.main:
        for p in (model_path, state_path, log_path):
            p.unlink(missing_ok=True)
    distributed.barrier(ctx)
    if model_path.exists():
        model, info = models_lib.load(model_path, map_location=device)
        _check_same_run(info.get("config"), config, model_path)
        meta = info.get("meta") or {}
        return TrainResult(
            model=model.eval(),
            config=config,
            run_dir=run_dir,
            model_path=model_path,
            step=int(meta.get("steps", 0)),
            total_steps=int(meta.get("steps", 0)),
            completed=True,
            reused=True,
            seconds=float(meta.get("seconds", 0.0)),
            test_acc=meta.get("test_acc"),
        )

    objective = objectives_lib.create(config.objective.name, **config.objective.params)
    ds = dataset if dataset is not None else load_train_data(config, "train")
    steps_per_epoch = len(ds) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch_size: expected at most the training set size {len(ds)}, got {config.batch_size}")
    total = config.steps if config.steps is not None else config.epochs * steps_per_epoch
    model = build_model(config, ds).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    distributed.broadcast_parameters(model, ctx)
    optimizer = make_optimizer(config.optim, model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(config.optim, s, steps_per_epoch, total)
    )
    tag = f"objective/{ctx.rank}" if ctx.active else "objective"
    generator = torch.Generator(device=device).manual_seed(derive_seed(config.seed, tag))
    step = 0
    if ctx.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and state_path.exists()):
            state_path.unlink(missing_ok=True)
            log_path.unlink(missing_ok=True)
        save_yaml(config, run_dir / "config.yaml")
    distributed.barrier(ctx)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(config.seed, "global"))
        if resume and state_path.exists():
            state = _load_state(state_path)
            _check_same_run(state.get("config"), config, state_path)
            models_lib.check_finite_weights(state["model"], f"{state_path} (use force=True to retrain)")
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            generators = state.get("generators") or [state["generator"]]
            if len(generators) != ctx.world:
                raise ValueError(
                    f"{state_path}: expected a state saved by {ctx.world} process(es), got {len(generators)}; "
                    "resume with the same number of processes or use force=True"
                )
            generator.set_state(generators[ctx.rank])
            torch.set_rng_state(state["torch_rng"])
            step = int(state["step"])
        distributed.barrier(ctx)

        def checkpoint(at_step: int) -> None:
            generators = distributed.gather(generator.get_state(), ctx)
            if ctx.main:
                _save_state(
                    state_path,
                    {
                        "step": at_step,
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "generator": generators[0],
                        "generators": generators,
                        "torch_rng": torch.get_rng_state(),
                        "config": to_dict(config),
                    },
                )
            distributed.barrier(ctx)

        end = total if stop_after is None else max(step, min(total, stop_after))
        history, seconds = _loop(
            model, objective, ds, config, optimizer, scheduler, generator, step, end, steps_per_epoch,
            log_path, checkpoint, progress and ctx.main, ctx, device,
        )  # fmt: skip
        step = end
        checkpoint(step)

    model.eval()
    completed = step >= total
    result = TrainResult(
        model=model, config=config, run_dir=run_dir, model_path=None, step=step, total_steps=total,
        completed=completed, seconds=seconds, history=history,
    )  # fmt: skip
    if completed:
        if ctx.main:
            if config.data.test_subset != 0 and dataset is None:
                result.test_acc = clean_accuracy(model, load_train_data(config, "test"), device=device)
            models_lib.save(
                model, model_path, config=to_dict(config), steps=step, seconds=seconds, test_acc=result.test_acc
            )
        result.test_acc = distributed.broadcast(result.test_acc, ctx)
        result.model_path = model_path
    if ctx.main:
        from .store import record_train_result  # imported here: the store imports evaluate, which imports this

        record_train_result(result, db)
    distributed.barrier(ctx)
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


def _loop(
    model: nn.Module,
    objective: Callable[..., tuple[torch.Tensor, dict[str, float]]],
    ds: ImageDataset,
    config: TrainConfig,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
    start: int,
    end: int,
    steps_per_epoch: int,
    log_path: Path,
    checkpoint: Callable[[int], None],
    progress: bool,
    ctx: distributed.Dist,
    device: str,
) -> tuple[list[dict[str, float]], float]:
    """Run global steps ``start..end-1``; returns the logged history and the seconds spent.

    This process trains on its slice ``[rank * b, (rank + 1) * b)`` (``b = batch_size / world``) of each step's
    batch; gradients are averaged over the processes before the optimiser step and the logged means too."""
    history: list[dict[str, float]] = []
    sums: dict[str, float] = {}
    count = 0
    perm_epoch, perm = -1, torch.empty(0, dtype=torch.int64)
    t0 = time.perf_counter()
    bar = tqdm(total=end, initial=start, desc=config.name, unit="step", disable=not progress, dynamic_ncols=True)
    model.train()
    set_step = getattr(objective, "set_step", None)
    params = [p for p in model.parameters() if p.requires_grad]
    weights = list(model.state_dict().items())  # views of the parameters and buffers, updated in place
    local = config.batch_size // ctx.world
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    autocast = (
        torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
        if config.autocast == "bf16"
        else contextlib.nullcontext()
    )
    for step in range(start, end):
        epoch, i = divmod(step, steps_per_epoch)
        if epoch != perm_epoch:
            perm_epoch, perm = epoch, epoch_permutation(config.seed, epoch, len(ds))
        idx = perm[i * config.batch_size : (i + 1) * config.batch_size][ctx.rank * local : (ctx.rank + 1) * local]
        x, y = ds.images[idx].to(device).contiguous(memory_format=layout), ds.labels[idx].to(device)
        lr = optimizer.param_groups[0]["lr"]
        optimizer.zero_grad(set_to_none=True)
        if set_step is not None:
            set_step(step)
        with autocast:
            loss, logs = objective(model, x, y, generator=generator)
        if not torch.isfinite(loss):
            raise ValueError(f"training diverged: expected a finite loss, got {float(loss.detach())} at step {step}")
        loss.backward()
        distributed.average_gradients(params, ctx)
        optimizer.step()
        _check_weights_after(step, lr, weights)
        scheduler.step()
        for key, value in logs.items():
            sums[key] = sums.get(key, 0.0) + float(value)
        count += 1
        done = step + 1
        if done % config.log_every == 0 or done == end:
            record = {"step": done, "epoch": done / steps_per_epoch, "lr": lr}
            record.update(distributed.mean_over_ranks({k: v / count for k, v in sums.items()}, ctx))
            record["seconds"] = time.perf_counter() - t0
            history.append(record)
            if ctx.main:
                with log_path.open("a") as f:
                    f.write(json.dumps(record) + "\n")
            bar.set_postfix({k: f"{record[k]:.3f}" for k in ("loss", "acc") if k in record})
            sums, count = {}, 0
        if done % config.checkpoint_every == 0 and done < end:
            checkpoint(done)
        bar.update(1)
    bar.close()
    return history, time.perf_counter() - t0
