"""IFIA (top-k, IG) batched over examples vs. the same code run one example at a time.

Run: ``python -m benchmarks.bench_ifia [--n 100] [--steps 10] [--ig-steps 10] [--threads 2] [--json out.json]``.
The model is a ``small_cnn`` trained for one quick pass over 6,000 MNIST images (seeded), attacked on the
correctly classified ones among the first ``n`` test images. Both runs are timed in the same process.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from attrobust.attacks import ifia
from attrobust.data import load
from attrobust.models import create

from ._common import print_table, write_json


def quick_model(seed: int = 0) -> torch.nn.Module:
    """``small_cnn`` after one Adam pass over 6,000 MNIST training images (a few seconds on 2 cores)."""
    train = load("mnist", "train").subset(torch.arange(6000))
    torch.manual_seed(seed)
    model = create("small_cnn")
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for x, y in train.batches(100, shuffle=True, seed=seed):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval()


def run(n: int = 100, steps: int = 10, ig_steps: int = 10, threads: int = 2, json_path: str | None = None) -> dict:
    torch.set_num_threads(threads)
    model = quick_model()
    test = load("mnist", "test")
    x, y = test.images[:n], test.labels[:n]
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    x, y = x[keep], y[keep]
    kw = {"k": 100, "eps": 0.3, "step_size": 0.02, "steps": steps, "beta": 3.0, "ig_steps": ig_steps}

    start = time.perf_counter()
    batched = ifia(model, x, y, **kw)
    t_batched = time.perf_counter() - start
    start = time.perf_counter()
    singles = [ifia(model, x[i : i + 1], y[i : i + 1], **kw) for i in range(len(y))]
    t_single = time.perf_counter() - start

    single_x = torch.cat([r.x_adv for r in singles])
    single_kendall = torch.cat([r.kendall for r in singles])
    single_step = torch.cat([r.step for r in singles])
    summary = {
        "examples": len(y),
        "batched_s": t_batched,
        "one_at_a_time_s": t_single,
        "speedup": t_single / t_batched,
        "max_abs_diff_x_adv": float((single_x - batched.x_adv).abs().max()),
        "max_abs_diff_kendall": float((single_kendall - batched.kendall).abs().max()),
        "same_selected_steps": bool(torch.equal(single_step, batched.step)),
        "mean_topk": float(batched.topk.mean()),
    }
    print_table(
        f"IFIA top-k (IG, {ig_steps} points), {len(y)} MNIST test images, {steps} steps, {threads} threads",
        ["variant", "seconds"],
        [["batched", t_batched], ["one at a time", t_single]],
    )
    print(
        f"speed-up {summary['speedup']:.2f}x; max |x_adv diff| {summary['max_abs_diff_x_adv']:.1e}; "
        f"max |Kendall diff| {summary['max_abs_diff_kendall']:.1e}; same steps: {summary['same_selected_steps']}"
    )
    write_json(json_path, {"benchmark": "ifia_batched", **kw, **summary})
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--ig-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    run(a.n, a.steps, a.ig_steps, a.threads, a.json)


if __name__ == "__main__":
    main()
