"""The benchmarks (``make bench``) run end to end at toy sizes and report what they claim to measure.

Timings are not asserted (they belong to ``make bench`` on a quiet machine); the values each benchmark checks
side by side (agreement with Captum and scipy, memory growth) are.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from benchmarks import bench_ig, bench_ig_memory, bench_kendall, bench_objectives, bench_train_options


@pytest.fixture(autouse=True)
def _keep_thread_count() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_bench_ig_agrees_with_captum_and_times_every_variant() -> None:
    summary = bench_ig.run(n=4, steps=3, repeat=1)
    assert summary["max_abs_diff_vs_captum"] < 1e-5
    assert {"ours default", "ours affine_prefix=False", "floor (plain gradient passes)"} <= set(summary["timings_s"])
    assert all(t > 0 for t in summary["timings_s"].values())


def test_bench_kendall_agrees_with_scipy() -> None:
    (row,) = bench_kendall.run(((30, 49),), repeat=1)
    assert row["max_abs_diff"] < 1e-6 and row["attrobust_s"] > 0 and row["scipy_loop_s"] > 0


def test_bench_ig_memory_sees_the_graph_of_every_path_point() -> None:
    assert bench_ig_memory.measure(16, 20, checkpoint=False) > 10  # MiB; the child's own peak, not its parent's


def test_bench_objectives_and_train_options_cover_their_lists(capsys: pytest.CaptureFixture[str]) -> None:
    bench_objectives.run(batch=4, repeat=1)
    results = bench_train_options.run(batch=4, repeat=1, compile_models=False)
    assert set(results) == {f"{m}/{o}" for m in bench_train_options.MODELS for o in bench_train_options.OBJECTIVES}
    for entry in results.values():
        assert set(entry["ms"]) == {"default", "channels_last", "bf16 autocast"}
    assert "speed-up" in capsys.readouterr().out
