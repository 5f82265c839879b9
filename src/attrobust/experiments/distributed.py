"""Many processes: training and evaluation under ``torchrun``.

``torchrun --nproc_per_node P [--nnodes M --node_rank r --rdzv_endpoint host:port] -m attrobust train|evaluate ...``
starts ``P * M`` processes with ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in their environment.
:func:`context` reads them and joins the process group (``nccl`` when the run's device is CUDA, ``gloo`` on
the CPU); without them everything runs in one process and nothing here communicates.

- Training (:mod:`.train`) keeps ``batch_size`` as the *global* batch: every step, rank ``r`` takes its
  ``batch_size / world`` slice of the same seeded permutation (a distributed sampler without replacement),
  the gradients are averaged over the ranks after the backward pass (one ``all_reduce``, what
  ``DistributedDataParallel`` does) — the update of the global batch — and rank 0 alone writes checkpoints,
  logs and the results database. The averaging is done on the plain module rather than through the
  ``DistributedDataParallel`` wrapper because objectives take Softplus copies of the model and run attacks
  with extra forward passes, which the wrapper's one-forward-one-backward bookkeeping does not allow.
  Batch-norm running statistics stay per rank; rank 0's are saved.
- Evaluation (:mod:`.evaluate`) deals whole evaluation batches round-robin to the ranks (each batch seeds its
  own attacks, so a batch gives the same numbers whichever process runs it); rank 0 gathers the per-example
  results in batch order and writes the JSON and the database once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    """Where this process stands: ``rank`` of ``world`` processes (``local_rank`` on its node)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when several processes take part (a process group is in use)."""
        return self.world > 1

    @property
    def main(self) -> bool:
        """True on the process that writes files (rank 0)."""
        return self.rank == 0

    def device(self, device: str) -> str:
        """The device of this process: ``cuda`` becomes ``cuda:<local_rank>``; anything else is kept."""
        return f"cuda:{self.local_rank}" if self.active and device == "cuda" else device


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name}: expected an integer (set by torchrun), got {value!r}") from None


def context(device: str = "cpu") -> Dist:
    """This process's :class:`Dist`, joining the process group on first use under ``torchrun``.

    ``device`` picks the backend: ``nccl`` for CUDA devices, ``gloo`` otherwise. Outside ``torchrun`` (no
    ``WORLD_SIZE`` or ``WORLD_SIZE=1``) returns the single-process ``Dist()``.
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world=world, local_rank=local_rank)


def shutdown() -> None:
    """The end of a ``torchrun`` command: wait until every process is done with the group.

    The group is left to be torn down with the processes: calling ``destroy_process_group`` here made a gloo
    rank abort at exit now and then (``terminate called without an active exception``) on a loaded machine,
    which torchrun reports as a failed run."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()  # every process is done talking before any leaves


def barrier(ctx: Dist) -> None:
    """Wait until every process reaches this point (no-op in one process)."""
    if ctx.active:
        dist.barrier()


def gather(obj: Any, ctx: Dist) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order, on every rank; ``[obj]`` in one process."""
    if not ctx.active:
        return [obj]
    out: list[Any] = [None] * ctx.world
    dist.all_gather_object(out, obj)
    return out


def broadcast(obj: Any, ctx: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (picklable); ``obj`` itself in one process."""
    if not ctx.active:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(values: dict[str, float], ctx: Dist) -> dict[str, float]:
    """The mean of each key over the ranks (every rank passes the same keys); ``values`` itself in one process."""
    if not ctx.active:
        return values
    every = gather(values, ctx)
    return {k: sum(float(v[k]) for v in every) / ctx.world for k in values}


def average_gradients(params: list[torch.nn.Parameter], ctx: Dist) -> None:
    """Replace each parameter's ``.grad`` by its mean over the ranks: one ``all_reduce`` of the flattened
    gradients (a parameter without a gradient counts as zeros). No-op in one process."""
    if not ctx.active:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= ctx.world
    offset = 0
    for p, g in zip(params, grads, strict=True):
        n = g.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def broadcast_parameters(module: torch.nn.Module, ctx: Dist) -> None:
    """Copy rank 0's parameters and buffers into every rank's ``module``. No-op in one process."""
    if not ctx.active:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)
