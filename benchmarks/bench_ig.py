"""Integrated Gradients speed: our chunk sizes vs. Captum vs. the floor of 50 plain gradient passes.

Run: ``python -m benchmarks.bench_ig [--n 100] [--steps 50] [--threads 2] [--json out.json]``.
All figures of one run are measured side by side, in rounds that run every variant once in turn (medians
reported); quote their ratios, not the seconds.
"""

from __future__ import annotations

import argparse

import torch

from attrobust.attributions import gradient, ig_alphas, integrated_gradients
from attrobust.models import create

from ._common import interleaved_times, print_table, write_json


def run(n: int = 100, steps: int = 50, threads: int = 2, repeat: int = 3, json_path: str | None = None) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create("mnist_cnn").eval()
    x = torch.rand(n, 1, 28, 28)
    y = torch.randint(0, 10, (n,))
    alphas, _ = ig_alphas(steps, "right")

    def floor() -> None:
        for a in alphas.tolist():
            gradient(model, a * x, y)

    fns = {"floor (plain gradient passes)": floor}
    for chunk in (1, 2, 5, 10, steps):
        fns[f"ours batch_steps={chunk}"] = lambda c=chunk: integrated_gradients(model, x, y, steps=steps, batch_steps=c)
    fns["ours default"] = lambda: integrated_gradients(model, x, y, steps=steps)
    fns["ours affine_prefix=False"] = lambda: integrated_gradients(model, x, y, steps=steps, affine_prefix=False)
    reference = integrated_gradients(model, x, y, steps=steps)
    max_diff = None
    try:
        from captum.attr import IntegratedGradients
    except ImportError:  # the dev extra is optional for users
        IntegratedGradients = None
    if IntegratedGradients is not None:
        ig = IntegratedGradients(model)
        for ibs in (n, 5 * n, steps * n):
            fns[f"captum internal_batch_size={ibs}"] = lambda b=ibs: ig.attribute(
                x, target=y, n_steps=steps, method="riemann_right", internal_batch_size=b
            )
        theirs = ig.attribute(x, target=y, n_steps=steps, method="riemann_right", internal_batch_size=n)
        max_diff = float((theirs - reference).abs().max())
    timings = interleaved_times(fns, repeat)
    base = timings["floor (plain gradient passes)"]
    rows = [[name, t, t / base] for name, t in timings.items()]
    print_table(
        f"Integrated Gradients, mnist_cnn, {n} images, {steps} steps, {threads} threads",
        ["variant", "seconds", "x floor"],
        rows,
    )
    captum_best = min((t for k, t in timings.items() if k.startswith("captum")), default=None)
    summary = {
        "timings_s": timings,
        "ours_default_vs_floor": timings["ours default"] / base,
        "captum_best_vs_ours_default": None if captum_best is None else captum_best / timings["ours default"],
        "max_abs_diff_vs_captum": max_diff,
    }
    print(f"ours (default) / floor = {summary['ours_default_vs_floor']:.3f}")
    if captum_best is not None:
        ratio = summary["captum_best_vs_ours_default"]
        print(f"captum (best batch) / ours (default) = {ratio:.3f}; max |diff| = {max_diff:.2e}")
    write_json(json_path, {"benchmark": "integrated_gradients", "n": n, "steps": steps, **summary})
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    run(a.n, a.steps, a.threads, a.repeat, a.json)


if __name__ == "__main__":
    main()
