"""Training-step cost under the speed options: default, ``channels_last``, bf16 ``autocast`` and ``torch.compile``.

Run: ``python -m benchmarks.bench_train_options [--batch 64] [--repeat 5] [--threads 2] [--json out.json]``.
Models ``small_cnn`` and ``mnist_cnn`` on a batch of MNIST training images; objectives ``natural``, ``pgd_at`` and
``ig_norm`` with the CPU budgets of ``bench_objectives``. Variants of one (model, objective) pair are timed in
interleaved rounds (medians). ``torch.compile`` is timed for the first-order objectives only: its autograd does
not support the double backward that IG-NORM (and every attributional objective) needs; its one-off compile time
is reported beside it. ``channels_last`` and bf16 are the ``TrainConfig`` options of the same names.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from attrobust import objectives
from attrobust.data import load
from attrobust.models import create

from ._common import interleaved_times, machine, print_table, write_json
from .bench_objectives import PARAMS

OBJECTIVES = ("natural", "pgd_at", "ig_norm")
MODELS = ("small_cnn", "mnist_cnn")


def _stepper(model: torch.nn.Module, objective: Any, x: torch.Tensor, y: torch.Tensor, bf16: bool) -> Callable:
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss, _ = objective(model, x, y, generator=torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()

    return step


def run(
    batch: int = 64, repeat: int = 5, threads: int = 2, compile_models: bool = True, json_path: str | None = None
) -> dict:
    torch.set_num_threads(threads)
    ds = load("mnist", "train")
    x, y = ds.images[:batch], ds.labels[:batch]
    x_cl = x.contiguous(memory_format=torch.channels_last)
    rows, results = [], {}
    for model_name in MODELS:
        for name in OBJECTIVES:
            objective = objectives.create(name, **PARAMS[name])

            def fresh(layout: torch.memory_format = torch.contiguous_format, arch: str = model_name) -> torch.nn.Module:
                torch.manual_seed(0)
                return create(arch).train().to(memory_format=layout)

            fns = {
                "default": _stepper(fresh(), objective, x, y, False),
                "channels_last": _stepper(fresh(torch.channels_last), objective, x_cl, y, False),
                "bf16 autocast": _stepper(fresh(), objective, x, y, True),
            }
            compile_s = None
            if compile_models and name != "ig_norm":
                compiled = torch.compile(fresh())
                fns["torch.compile"] = _stepper(compiled, objective, x, y, False)
                start = time.perf_counter()
                fns["torch.compile"]()  # compiles
                compile_s = time.perf_counter() - start
            timings = interleaved_times(fns, repeat)
            base = timings["default"]
            results[f"{model_name}/{name}"] = {"ms": {k: 1000 * v for k, v in timings.items()}, "compile_s": compile_s}
            for variant, t in timings.items():
                extra = f"{compile_s:.1f}" if variant == "torch.compile" else ""
                rows.append([model_name, name, variant, 1000 * t, base / t, extra])
    print_table(
        f"Training step, batch {batch} MNIST, {threads} threads (speed-up over default; > 1 is faster)",
        ["model", "objective", "variant", "ms/step", "speed-up", "compile s"],
        rows,
    )
    write_json(json_path, {"benchmark": "train_options", "batch": batch, "machine": machine(), "results": results})
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (it needs a C++ compiler)")
    p.add_argument("--json", default=None)
    a = p.parse_args(argv)
    run(a.batch, a.repeat, a.threads, not a.no_compile, a.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
