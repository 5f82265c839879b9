"""Seconds per training step (forward, inner attack, backward, Adam step) of every objective, relative to
``natural`` on the same batch and model.

Run: ``python -m benchmarks.bench_objectives [--batch 64] [--repeat 3] [--threads 2] [--json out.json]``.
Model ``small_cnn`` on a batch of MNIST training images; every objective uses the parameters of the CPU
quickstart/preset budgets below (the papers' full budgets cost proportionally more inner steps). All objectives
are timed in the same process, interleaved, so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

from attrobust import objectives
from attrobust.data import load
from attrobust.models import create

from ._common import best_time, print_table, write_json

_PGD = {"eps": 0.3, "step_size": 0.1, "steps": 5}
# the CPU budgets the quickstart and the *_cpu presets use
PARAMS: dict[str, dict[str, Any]] = {
    "natural": {},
    "pgd_at": _PGD,
    "trades": {"beta": 6.0, **_PGD},
    "mart": {"beta": 6.0, **_PGD},
    "pgd_at+igr": {"ig_steps": 5, **_PGD},
    "trades+igr": {"ig_steps": 5, "beta": 6.0, **_PGD},
    "mart+igr": {"ig_steps": 5, **_PGD},
    "igr": {"base": "pgd_at", "ig_steps": 5, **_PGD},
    "ig_norm": {"ig_steps": 10, "attack_ig_steps": 3, **_PGD},
    "ig_sum_norm": {"ig_steps": 10, "attack_ig_steps": 3, **_PGD},
    "art": {"eps": 0.3, "step_size": 0.1, "steps": 3, "beta": 10.0},
    "adv_aat": {"ig_steps": 5, "attack_ig_steps": 3, **_PGD},
    "ssr": {"power_iters": 5},
    "input_gradient_reg": {},
}


def run(batch: int = 64, repeat: int = 3, threads: int = 2, json_path: str | None = None) -> dict:
    torch.set_num_threads(threads)
    missing = sorted(set(objectives.OBJECTIVES.names()) - set(PARAMS))
    if missing:
        raise ValueError(f"benchmark parameters missing for objectives: {', '.join(missing)}")
    ds = load("mnist", "train")
    x, y = ds.images[:batch], ds.labels[:batch]
    torch.manual_seed(0)
    model = create("small_cnn").train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step(objective: objectives.Objective) -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = objective(model, x, y, generator=torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()

    built = {name: objectives.create(name, **params) for name, params in PARAMS.items()}
    seconds = {name: 0.0 for name in built}
    for _ in range(repeat):  # interleave the objectives so drifting machine load hits all alike
        for name, objective in built.items():
            seconds[name] += best_time(lambda o=objective: step(o), repeat=1, warmup=1) / repeat
    base = seconds["natural"]
    rows = [[name, PARAMS[name], seconds[name] * 1e3, seconds[name] / base] for name in built]
    print_table(
        f"Training step cost, small_cnn, batch {batch} MNIST, {threads} threads (median of {repeat})",
        ["objective", "parameters", "ms/step", "x natural"],
        [[r[0], ", ".join(f"{k}={v}" for k, v in r[1].items()) or "-", r[2], r[3]] for r in rows],
    )
    summary = {"batch": batch, "threads": threads, "seconds_per_step": seconds,
               "ratio_to_natural": {k: v / base for k, v in seconds.items()}, "params": PARAMS}  # fmt: skip
    write_json(json_path, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    run(args.batch, args.repeat, args.threads, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
