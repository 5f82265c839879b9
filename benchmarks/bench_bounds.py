"""Time per image of the attribution-deviation upper bounds (paper 004) on a softplus ``small_cnn``.

Run: ``python -m benchmarks.bench_bounds [--images 2] [--threads 2] [--json out.json]``. For 28x28x1, 32x32x3
and 224x224x3 inputs: the Euclidean bound (power iteration on J^T J with Jacobian-vector products; the Jacobian is
never formed), its iteration count, and the l_inf bound (columns of P = J^T J in blocks; refused above 16,384
input features, which the table reports). Everything runs in one process.
"""

from __future__ import annotations

import argparse
import time

import torch

from attrobust.metrics.bounds import attribution_spectral_norm, linf_bound
from attrobust.models import create, softplus

from ._common import print_table, write_json

SIZES = ((1, 28), (3, 32), (3, 224))


def run(images: int = 2, threads: int = 2, json_path: str | None = None) -> dict:
    torch.set_num_threads(threads)
    rows, out = [], {}
    for c, s in SIZES:
        torch.manual_seed(0)
        model = softplus(create("small_cnn", 10, in_channels=c, input_size=s), 10.0).eval()
        x = torch.rand(images, c, s, s, generator=torch.Generator().manual_seed(0))
        y = torch.arange(images) % 10
        start = time.perf_counter()
        spec = attribution_spectral_norm(model, x, y, iters=100, tol=1e-5, generator=torch.Generator().manual_seed(0))
        t_euclid = (time.perf_counter() - start) / images
        try:
            start = time.perf_counter()
            linf_bound(model, x, y, 8 / 255)
            t_linf: float | None = (time.perf_counter() - start) / images
        except ValueError:
            t_linf = None
        key = f"{s}x{s}x{c}"
        out[key] = {"euclidean_s_per_image": t_euclid, "iterations": int(spec.iterations), "linf_s_per_image": t_linf}
        rows.append([key, t_euclid, int(spec.iterations), "refused (d > 16384)" if t_linf is None else t_linf])
    print_table(f"Upper bounds, softplus small_cnn, {images} images, {threads} threads (seconds per image)",
                ["input", "euclidean s/img", "power its", "linf s/img"], rows)  # fmt: skip
    write_json(json_path, {"images": images, "threads": threads, "results": out})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    run(args.images, args.threads, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
