"""Batched Kendall tau-b (attrobust.metrics.kendall_tau) against a Python loop over scipy.stats.kendalltau.

Both run in the same process on the same maps (pairs of correlated random maps, the size of MNIST, 128x128 and
224x224 saliency maps); the table reports the best of ``--repeat`` timings of each, their ratio and the largest
absolute difference between the two results.

    python benchmarks/bench_kendall.py [--repeat 3] [--threads 2] [--device cpu] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import scipy
import torch
from scipy import stats

from attrobust.metrics import kendall_tau

# (number of maps, pixels per map)
CASES: tuple[tuple[int, int], ...] = ((1000, 784), (100, 16_384), (100, 50_176))


def make_maps(n: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of float32 maps ``(n, d)``: non-negative saliency-like values and a noisy copy of them."""
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, d, generator=g) ** 2
    b = a + 0.25 * torch.rand(n, d, generator=g)
    return a, b


def scipy_loop(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-by-row scipy.stats.kendalltau (tau-b), the way the reference evaluation code computes it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([stats.kendalltau(x, y).statistic for x, y in zip(a, b, strict=True)])


def best_time(fn: Callable[[], object], repeat: int) -> tuple[float, object]:
    """Smallest wall-clock time of ``repeat`` calls and the last result."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def run(
    cases: Sequence[tuple[int, int]] = CASES, *, repeat: int = 3, threads: int = 2, device: str = "cpu", seed: int = 0
) -> list[dict[str, object]]:
    """Time both implementations on every case; returns one row (dict) per case."""
    torch.set_num_threads(threads)
    rows = []
    for n, d in cases:
        a, b = make_maps(n, d, seed)
        a_dev, b_dev = a.to(device), b.to(device)

        def ours(a_dev: torch.Tensor = a_dev, b_dev: torch.Tensor = b_dev) -> torch.Tensor:
            out = kendall_tau(a_dev, b_dev)
            if out.is_cuda:
                torch.cuda.synchronize()
            return out

        ours()  # warm-up (allocations, kernels)
        t_ours, tau = best_time(ours, repeat)
        a_np, b_np = a.numpy(), b.numpy()
        t_scipy, ref = best_time(lambda a_np=a_np, b_np=b_np: scipy_loop(a_np, b_np), repeat)
        diff = float(np.max(np.abs(tau.double().cpu().numpy() - ref)))
        rows.append(
            {
                "maps": n,
                "pixels": d,
                "attrobust_s": t_ours,
                "scipy_loop_s": t_scipy,
                "speedup": t_scipy / t_ours,
                "max_abs_diff": diff,
            }
        )
    return rows


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """Fixed-width text table of ``run``'s rows."""
    head = f"{'maps':>6} {'pixels':>8} {'attrobust [s]':>14} {'scipy loop [s]':>15} {'speed-up':>9} {'max |diff|':>11}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['maps']:>6} {r['pixels']:>8} {r['attrobust_s']:>14.4f} {r['scipy_loop_s']:>15.4f} "
            f"{r['speedup']:>8.2f}x {r['max_abs_diff']:>11.2e}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="timings per implementation and case (best kept)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="device of the batched implementation (cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.threads < 1:
        parser.error(f"expected --repeat >= 1 and --threads >= 1, got {args.repeat} and {args.threads}")
    rows = run(repeat=args.repeat, threads=args.threads, device=args.device, seed=args.seed)
    env = (
        f"torch {torch.__version__}, scipy {scipy.__version__}, numpy {np.__version__}, "
        f"{args.threads} threads, device {args.device}, {platform.processor() or platform.machine()}"
    )
    print(f"Kendall tau-b: batched attrobust.metrics.kendall_tau vs loop over scipy.stats.kendalltau ({env})")
    print(format_table(rows))
    if args.json is not None:
        payload = {"benchmark": "kendall_tau", "environment": env, "repeat": args.repeat, "results": rows}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
