"""The GPU readiness script (``make gpu-check``, ``benchmarks/gpu_check.py``), checked on the CPU: it refuses to
run without CUDA, bounds every part, and its one-epoch child trains a preset through the trainer."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
from benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_says_so_and_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA device is available" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--out", str(tmp_path)])  # the CPU only for the smoke check


def test_every_part_is_bounded_and_the_limits_fit_eight_minutes(tmp_path: Path) -> None:
    args = argparse.Namespace(device="cuda", smoke=False, data_dir=None)
    parts = gpu_check._parts(args, tmp_path)
    assert [p.name for p in parts] == ["tests", "kendall", "bench", *gpu_check.PRESETS]
    assert sum(p.limit for p in parts) <= 8 * 60 - 20  # room for the start-up of each part
    assert parts[0].cmd[-3:] == ["-k", "cuda", "tests"] and parts[2].cmd[-2:] == ["-m", "benchmarks"]
    assert all("cuda" in p.cmd for p in parts[3:])


def test_a_part_past_its_limit_is_stopped_and_reported(tmp_path: Path) -> None:
    quick = gpu_check.Part("quick", [sys.executable, "-c", "print('done here')"], 60)
    slow = gpu_check.Part("slow", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                          3)  # fmt: skip
    rows = [gpu_check._run(quick), gpu_check._run(slow)]
    assert rows[0]["status"] == "ok" and rows[0]["detail"] == "done here"
    assert rows[1]["status"] == "stopped at its 3 s limit" and rows[1]["seconds"] < 30
    table = gpu_check._table(rows)
    assert table.splitlines()[0].startswith("part") and "stopped at its 3 s limit" in table


def test_one_epoch_child_trains_the_cpu_preset(tmp_path: Path) -> None:
    assert gpu_check.main(["--epoch", "natural", "--device", "cpu", "--smoke", "--out", str(tmp_path)]) == 0
    figures = json.loads((tmp_path / "epoch_natural.json").read_text())
    assert (figures["steps"], figures["total"], figures["partial"]) == (2, 2, False)  # 16 images, batch 8
    assert figures["peak_mib"] > 0 and figures["data"].startswith("synthetic 16")
    assert "2/2 steps" in gpu_check._epoch_detail(figures)
    cfg, what = gpu_check._epoch_config("pgd_at_igr", "cuda", False, None, tmp_path)
    assert (cfg.epochs, cfg.steps, cfg.device, cfg.batch_size, cfg.objective.name) == (1, None, "cuda", 128,
                                                                                       "pgd_at+igr")  # fmt: skip
    assert what == "synthetic 50000 x 3x32x32" or what == "CIFAR-10"
