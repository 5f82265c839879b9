"""The report is written from stored results alone: with the checkpoint deleted and the data unreachable the
HTML is byte-identical (apart from its timestamp); it never loads a model or data, never runs an attack or an
attribution; a missing or replaced examples file becomes a note; the deprecated ``models=`` is ignored."""

from __future__ import annotations

import ast
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import attrobust
from attrobust.experiments import report
from attrobust.experiments.config import EvalConfig, from_dict
from attrobust.experiments.evaluate import evaluate
from attrobust.experiments.report import write_report
from test_report import FAST, train_tiny

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny(tmp_path_factory.mktemp("runs"))


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> tuple[Path, Path]:
    """(checkpoint, results.json) of a copy of the trained model evaluated in ``tmp_path/tiny``."""
    ckpt = tmp_path / "tiny" / "model.pt"
    ckpt.parent.mkdir()
    shutil.copyfile(trained, ckpt)
    results = evaluate(ckpt, from_dict(EvalConfig, FAST), progress=False, db=False)
    assert results["examples"]["count"] > 0
    return ckpt, Path(results["path"])


def _forbid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading a model or data, attacking and differentiating raise."""

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the report must work from stored results alone")

    for owner, name in ((torch, "load"), (torch.autograd, "grad"), (attrobust.models, "load"),
                        (attrobust.data, "load"), (attrobust.attacks, "ifia"), (attrobust.attacks, "pgd"),
                        (sys.modules["attrobust.experiments.evaluate"], "evaluate"),
                        (attrobust.experiments.examples, "of_batch")):  # fmt: skip
        monkeypatch.setattr(owner, name, refuse)


def _without_timestamps(text: str) -> str:
    """The text with every UTC timestamp replaced (the report's own creation time differs between the two)."""
    return _TIME.sub("<time>", text)


def test_report_is_written_from_stored_results_alone(
    run: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ckpt, path = run
    before, _ = write_report([path], tmp_path / "before")
    ckpt.unlink()
    assert not list(tmp_path.rglob("*.pt")), "no checkpoint left"
    monkeypatch.setenv("ATTROBUST_DATA", str(tmp_path / "nowhere"))
    _forbid(monkeypatch)
    after, md_after = write_report([path], tmp_path / "after")
    first, second = before.read_text(encoding="utf-8"), after.read_text(encoding="utf-8")
    assert len(_TIME.findall(first)) == len(_TIME.findall(second)) >= 2, "the report's and the results' times"
    assert _without_timestamps(first) == _without_timestamps(second)
    assert "Saliency maps under IFIA: tiny" in second and "data:image/png;base64," in second
    assert _without_timestamps((tmp_path / "before" / "report.md").read_text()) == _without_timestamps(
        md_after.read_text()
    )
    for png in (tmp_path / "before").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "after" / png.name).read_bytes(), png.name


def test_missing_or_replaced_examples_become_notes(run: tuple[Path, Path], tmp_path: Path) -> None:
    _, path = run
    npz = path.with_name("results.examples.npz")
    with np.load(npz, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["topk"] = np.zeros_like(arrays["topk"])
    np.savez(npz, **arrays)
    lines: list[str] = []
    write_report([path], tmp_path / "replaced", echo=lines.append)
    assert len(lines) == 1 and "saliency grid of tiny left out" in lines[0] and "sha256" in lines[0]
    npz.unlink()
    lines.clear()
    html_path, _ = write_report([path], tmp_path / "missing", echo=lines.append)
    assert len(lines) == 1 and "stored examples not found" in lines[0]
    assert "Saliency maps under IFIA" not in html_path.read_text()


def test_deprecated_checkpoints_are_ignored(run: tuple[Path, Path], tmp_path: Path) -> None:
    _, path = run
    with pytest.warns(DeprecationWarning, match="grids now come from the examples stored"):
        html_path, _ = write_report([path], tmp_path, models={"tiny": tmp_path / "gone.pt"}, n_examples=1)
    with pytest.warns(DeprecationWarning, match="ifia_overrides is deprecated"):
        write_report([path], tmp_path / "2", ifia_overrides={"steps": 1})
    assert "Saliency maps under IFIA: tiny" in html_path.read_text()


def test_report_package_imports_no_model_data_or_attack_module() -> None:
    """The report's own modules import nothing that loads a model or data or runs an attack or training."""
    forbidden = ("attacks", "models", "data", "objectives", "attributions", "train", "audit", "bench", "suite")
    root = Path(report.__file__).parent
    for source in root.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                names = {*node.module.split("."), *(a.name for a in node.names)}
            elif isinstance(node, ast.Import):
                names = {part for a in node.names for part in a.name.split(".")}
            else:
                continue
            assert not names & set(forbidden), f"{source.name} imports {sorted(names & set(forbidden))}"
