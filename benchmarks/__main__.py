"""Run every benchmark and write their JSON into ``benchmarks/results/`` (``make bench``).

Each benchmark measures its variants side by side in the same run; quote the ratios, not the seconds.
"""

from __future__ import annotations

import sys
from pathlib import Path

from . import (
    bench_bounds,
    bench_ifia,
    bench_ig,
    bench_ig_memory,
    bench_kendall,
    bench_objectives,
    bench_train_options,
)


def main() -> int:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    bench_ig.run(json_path=str(out / "ig.json"))
    bench_ifia.run(json_path=str(out / "ifia.json"))
    bench_objectives.run(json_path=str(out / "objectives.json"))
    bench_train_options.run(json_path=str(out / "train_options.json"))
    bench_bounds.run(json_path=str(out / "bounds.json"))
    bench_ig_memory.run(json_path=str(out / "ig_memory.json"))
    return bench_kendall.main(["--json", str(out / "kendall.json")])


if __name__ == "__main__":
    sys.exit(main())
