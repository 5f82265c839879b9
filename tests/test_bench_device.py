"""``bench table --device``: the device replaces the presets' in every training and evaluation; a device this
machine lacks is refused before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from attrobust.cli import app
from attrobust.experiments import bench


def test_device_reaches_every_run_and_evaluation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    def capture(preset: Any, runs: list, evals: list, **_: Any) -> dict[str, Any]:
        seen["runs"], seen["evals"] = runs, evals
        return {}

    monkeypatch.setattr(bench, "_run_preset", capture)
    bench.table("fms_table1_fmnist", tmp_path, "cpu", device="cuda:1", report=False)
    assert seen["runs"] and len(seen["evals"]) > 1  # a table with further evaluations: every one is covered
    assert {cfg.device for _, cfg in seen["runs"]} == {"cuda:1"}
    assert {cfg.device for _, cfg in seen["evals"]} == {"cuda:1"}
    bench.table("fms_table1_fmnist", tmp_path, "cpu", report=False)  # without it, the presets' own device
    assert {cfg.device for _, cfg in seen["runs"]} == {"cpu"}


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_without_cuda_is_refused_before_any_work(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["bench", "table", "rar_mnist", "--models", "natural", "--out-dir",
                                      str(tmp_path), "--device", "cuda", "--quiet"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "device: expected a device of this machine" in result.output
    assert not any(tmp_path.iterdir())  # no run directory, no database
