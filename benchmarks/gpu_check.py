"""GPU readiness in one command (``make gpu-check``): the CUDA tests, the benchmarks and one epoch of three
CIFAR-10 presets on the GPU, within 8 minutes, then a table.

Parts, each a subprocess with its own time limit (a part that runs out is stopped and reported with what it did;
the limits add up to less than 8 minutes):

1. ``tests``: the CUDA tests of the suite (``pytest -k cuda``: the tests and parameters named after CUDA, which
   skip themselves without it);
2. ``kendall``: ``benchmarks.bench_kendall --device cuda`` (the benchmark with an accelerator path);
3. ``bench``: every benchmark (``python -m benchmarks``, what ``make bench`` runs), for as long as its limit allows;
4. ``natural``, ``pgd_at``, ``pgd_at_igr``: one epoch of the ``configs/igr_table2_cifar10`` presets of that name
   (ResNet-18, batch 128, 390 steps) on the device, through the trainer itself: seconds, steps done and the peak
   memory the device allocated. They read CIFAR-10 when ``$ATTROBUST_DATA`` (or ``--data-dir``) holds it, else
   50,000 synthetic images of CIFAR-10's shape (a step costs the same on any pixels; the table says which). A run
   stopped by its limit reports the steps it did and the epoch time they project.

Without CUDA it says so and exits with status 2. ``--device cpu --smoke`` runs every part on the CPU at toy size
(the pytest selection only collected, the Kendall benchmark once, each epoch on 16 images of the ``_cpu`` presets):
the test suite checks the script that way. Results also go to ``<out>/gpu_check.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("natural", "pgd_at", "pgd_at_igr")
# seconds per part: tests, kendall, bench, then each epoch (480 s in all, process start-up included)
LIMITS = {"tests": 90, "kendall": 40, "bench": 90, "natural": 60, "pgd_at": 90, "pgd_at_igr": 90}
SMOKE_LIMIT = 120


@dataclass
class Part:
    """One bounded step of the check: a command line, its time limit and where an epoch part writes its figures."""

    name: str
    cmd: list[str]
    limit: float
    result: Path | None = None
    row: dict[str, Any] = field(default_factory=dict)


def _parts(args: argparse.Namespace, out: Path) -> list[Part]:
    py = sys.executable
    smoke = args.smoke
    limit = (lambda name: SMOKE_LIMIT) if smoke else (lambda name: LIMITS[name])
    tests = [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "cuda", "tests"]
    kendall = [py, "-m", "benchmarks.bench_kendall", "--device", args.device, "--repeat", "1" if smoke else "3"]
    parts = [Part("tests", [*tests, "--collect-only"] if smoke else tests, limit("tests")),
             Part("kendall", kendall, limit("kendall"))]  # fmt: skip
    if not smoke:
        parts.append(Part("bench", [py, "-m", "benchmarks"], limit("bench")))
    for preset in PRESETS:
        result = out / f"epoch_{preset}.json"
        cmd = [py, "-m", "benchmarks.gpu_check", "--epoch", preset, "--device", args.device, "--out", str(out)]
        cmd += ["--smoke"] if smoke else []
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        parts.append(Part(preset, cmd, limit(preset), result))
    return parts


def _run(part: Part) -> dict[str, Any]:
    """Run ``part`` within its limit (SIGTERM at the limit, SIGKILL 20 s later); its row of the table."""
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    proc = subprocess.Popen(part.cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=part.limit)
        status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            output, _ = proc.communicate()
        status = f"stopped at its {part.limit:.0f} s limit"
    seconds = time.perf_counter() - t0
    lines = [line for line in (output or "").splitlines() if line.strip()]
    detail = lines[-1][:100] if lines else ""
    if part.result is not None and part.result.is_file():
        figures = json.loads(part.result.read_text())
        detail = _epoch_detail(figures)
        if figures.get("partial") and status == "ok":
            status = "partial"
    return {"part": part.name, "status": status, "seconds": round(seconds, 1), "detail": detail, "log": lines[-20:]}


def _epoch_detail(f: dict[str, Any]) -> str:
    where = "allocated on the GPU" if str(f.get("device", "")).startswith("cuda") else "resident (CPU)"
    memory = "-" if f.get("peak_mib") is None else f"{f['peak_mib']:,.0f} MiB peak {where}"
    steps = f"{f['steps']}/{f['total']} steps in {f['seconds']:.1f} s"
    projected = f", epoch ~{f['epoch_seconds']:.0f} s" if f.get("partial") and f.get("epoch_seconds") else ""
    return f"{steps}{projected}, {memory}, {f['data']}"


def _table(rows: list[dict[str, Any]]) -> str:
    cols = ("part", "status", "seconds", "detail")
    cells = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    fmt = lambda row: " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([fmt(cols), "-+-".join("-" * w for w in widths), *(fmt(r) for r in cells)])


# ------------------------------------------------------------------ one epoch of a preset (a child process)


def _epoch_config(preset: str, device: str, smoke: bool, data_dir: str | None, run_dir: Path) -> tuple[Any, str]:
    """The preset's TrainConfig for one epoch on ``device`` and a word on its data."""
    from attrobust.experiments.config import TrainConfig, load_yaml

    folder = ROOT / "configs" / "igr_table2_cifar10"
    overrides = ["epochs=1", "steps=null", f"device={device}", f"out_dir={run_dir}", "data.test_subset=0",
                 "checkpoint_every=1000000", "log_every=10"]  # fmt: skip
    root = data_dir or os.environ.get("ATTROBUST_DATA")
    real = not smoke and root is not None and any((Path(root) / d).is_dir() for d in ("cifar10", "cifar-10-batches-py"))
    if real:
        overrides.append(f"data.data_dir={root}")
        what = "CIFAR-10"
    else:
        n = 16 if smoke else 50_000
        overrides += ["data.name=synthetic", f"data.kwargs={{n: {n}, channels: 3, size: 32, num_classes: 10}}"]
        overrides += ["batch_size=8"] if smoke else []
        what = f"synthetic {n} x 3x32x32"
    name = f"{preset}_cpu" if smoke else preset
    return load_yaml(TrainConfig, folder / f"{name}.yaml", overrides), what


def _epoch(args: argparse.Namespace) -> int:
    """Train one epoch of ``args.epoch`` and write its figures to ``<out>/epoch_<preset>.json``; on SIGTERM
    (the part's limit) write what the training log shows so far."""
    import torch

    from attrobust.experiments.train import train

    out = Path(args.out)
    run_dir = out / "runs"
    cfg, what = _epoch_config(args.epoch, args.device, args.smoke, args.data_dir, run_dir)
    result_path = out / f"epoch_{args.epoch}.json"
    cuda = args.device.startswith("cuda")
    t0 = time.perf_counter()

    def write(steps: int, total: int | None, partial: bool) -> None:
        seconds = time.perf_counter() - t0
        # the device's peak allocation on CUDA; on the CPU the process's peak resident memory (Linux: KiB)
        peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else resource.getrusage(resource.RUSAGE_SELF)[2] / 1024
        epoch = seconds * total / steps if partial and steps and total else None
        figures = {"preset": args.epoch, "steps": steps, "total": total, "seconds": seconds, "partial": partial,
                   "epoch_seconds": epoch, "peak_mib": peak, "data": what, "device": args.device}  # fmt: skip
        result_path.write_text(json.dumps(figures, indent=1))

    def on_term(signum: int, frame: Any) -> None:
        log = run_dir / cfg.name / "log.jsonl"
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
        last = records[-1] if records else {}
        total = round(last["step"] / last["epoch"]) if last.get("epoch") else None
        write(int(last.get("step", 0)), total, partial=True)
        os._exit(3)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result = train(cfg, force=True, progress=False, db=False)
        write(result.step, result.total_steps, partial=False)
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="every part at toy size (a check of this script)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check"), help="output folder")
    parser.add_argument("--data-dir", default=None, help="where CIFAR-10 is (default $ATTROBUST_DATA)")
    parser.add_argument("--epoch", choices=PRESETS, help=argparse.SUPPRESS)  # the child that trains one epoch
    args = parser.parse_args(argv)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"gpu-check: no CUDA device is available to torch {torch.__version__} (cuda build: "
                  f"{torch.version.cuda or 'none'}); run it on a machine with a GPU and a CUDA build of torch "
                  f"(`make gpu-check GPU_PY=/path/to/python`), or `--device cpu --smoke` to check the script",
                  file=sys.stderr)  # fmt: skip
            return 2
    elif not args.smoke:
        parser.error(f"--device {args.device}: expected cuda, or --smoke for a toy run on the CPU")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.epoch:
        return _epoch(args)
    for stale in out.glob("epoch_*.json"):
        stale.unlink()
    rows = []
    for part in _parts(args, out):
        print(f"gpu-check: {part.name} (at most {part.limit:.0f} s) ...", flush=True)
        rows.append(_run(part))
    print(_table(rows))
    (out / "gpu_check.json").write_text(json.dumps({"device": args.device, "smoke": args.smoke, "parts": rows},
                                                   indent=1))  # fmt: skip
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
