"""Preset benchmarks: train and evaluate a set of models from ``configs/`` and print the papers' table.

``quickstart`` trains ``small_cnn`` naturally and with PGD adversarial training on MNIST
(``configs/quickstart_natural.yaml``, ``configs/quickstart_pgd_at.yaml``), evaluates both with
``configs/quickstart_eval.yaml`` (on top of the RAR paper's MNIST evaluation defaults) and prints
model | natural acc | PGD acc | top-k | Kendall | no-valid. Finished checkpoints and results are reused, so a
second run only prints the table; an interrupted training resumes where its last checkpoint left it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import EvalConfig, TrainConfig, eval_defaults, load_yaml, merge, merge_yaml, to_dict
from .evaluate import evaluate, file_sha256, format_table, table_row
from .train import train

QUICKSTART = {
    "models": (("natural", "quickstart_natural.yaml"), ("pgd_at", "quickstart_pgd_at.yaml")),
    "eval": "quickstart_eval.yaml",
}

# Overrides per budget, applied on top of the preset files: "cpu" runs the files as written (minutes on two
# cores); "full" trains on the whole training set for longer (the paper's 40-step inner attack) and evaluates
# 1000 samples with the RAR paper's IFIA setting (100 steps, IG with 100 points, best of 3 restarts): hours on
# a CPU. Runs of a budget other than "cpu" are named <preset name>_<budget>.
BUDGETS: dict[str, dict[str, Any]] = {
    "cpu": {"train": {}, "eval": {}},
    "full": {
        "train": {
            "natural": ["epochs=5", "data.train_subset=null", "data.test_subset=null"],
            "pgd_at": [
                "steps=null",
                "epochs=10",
                "data.train_subset=null",
                "data.test_subset=null",
                "objective.params={eps: 0.3, step_size: 0.01, steps: 40, random_start: true, eps_warmup: 2000}",
            ],
        },
        "eval": {"n": 1000, "ifia": {"steps": 100, "ig_steps": 100, "restarts": 3}},
    },
}


def config_dir() -> Path:
    """Directory of the YAML presets: ``$ATTROBUST_CONFIGS`` or the repository's ``configs/``."""
    env = os.environ.get("ATTROBUST_CONFIGS")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "configs"
    if not path.is_dir():
        raise ValueError(
            f"preset directory not found: {path}; run from a source checkout (pip install -e .) or set "
            "ATTROBUST_CONFIGS to the directory holding the configs/*.yaml presets"
        )
    return path


def quickstart_configs(
    out_dir: str | Path = "runs", budget: str = "cpu", presets: str | Path | None = None
) -> tuple[list[tuple[str, TrainConfig]], EvalConfig]:
    """The resolved training configs ``[(label, TrainConfig)]`` and the evaluation config of the quickstart."""
    if budget not in BUDGETS:
        raise ValueError(f"budget: expected one of {', '.join(map(repr, BUDGETS))}, got {budget!r}")
    presets = Path(presets) if presets is not None else config_dir()
    overrides = BUDGETS[budget]
    runs = []
    for label, filename in QUICKSTART["models"]:
        extra = [*overrides["train"].get(label, []), f"out_dir={out_dir}"]
        if budget != "cpu":
            extra.append(f"name={Path(filename).stem}_{budget}")
        runs.append((label, load_yaml(TrainConfig, presets / filename, extra)))
    eval_cfg = merge_yaml(eval_defaults(runs[0][1].data.name), presets / QUICKSTART["eval"])
    return runs, merge(eval_cfg, overrides["eval"])


def _reusable(path: Path, eval_cfg: EvalConfig, checkpoint: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    same_cfg = results.get("eval_config") == to_dict(eval_cfg)
    same_model = results.get("checkpoint_sha256") == file_sha256(checkpoint)
    return results if same_cfg and same_model else None


def quickstart(
    out_dir: str | Path = "runs",
    budget: str = "cpu",
    *,
    force: bool = False,
    progress: bool = True,
    presets: str | Path | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train (or reuse) the quickstart models, evaluate (or reuse) them and print the table with ``echo``.

    Returns ``{"rows": [table_row...], "results": {label: results}, "seconds": float, "table": str}``.
    """
    t0 = time.perf_counter()
    runs, eval_cfg = quickstart_configs(out_dir, budget, presets)
    rows, all_results = [], {}
    for label, cfg in runs:
        result = train(cfg, resume=True, force=force, progress=progress)
        verb = "reused" if result.reused else f"trained in {result.seconds:.0f}s"
        acc = "" if result.test_acc is None else f", clean test accuracy {100 * result.test_acc:.2f}%"
        echo(f"{label}: {verb} -> {result.model_path}{acc}")
        results_path = result.run_dir / "results.json"
        results = None if force else _reusable(results_path, eval_cfg, result.model_path)
        if results is None:
            results = evaluate(result.model_path, eval_cfg, progress=progress, out=results_path)
            echo(f"{label}: evaluated in {results['timings']['total']:.0f}s -> {results_path}")
        else:
            echo(f"{label}: reused {results_path}")
        all_results[label] = results
        rows.append(table_row(label, results))
    table = format_table(rows)
    cfg = eval_cfg
    echo(
        f"\nIFIA {cfg.ifia.dissimilarity} ({cfg.ifia.attribution}, k={cfg.ifia.k}, eps={cfg.ifia.eps}, "
        f"{cfg.ifia.steps} steps of {cfg.ifia.step_size}, {cfg.ifia.ig_steps} IG points, beta={cfg.ifia.beta}, "
        f"{cfg.ifia.restarts} restart(s)) and PGD-{cfg.pgd.steps} (eps={cfg.pgd.eps}) on {cfg.n} test images; "
        "IFIA attacks the correctly classified ones:\n"
    )
    echo(table)
    seconds = time.perf_counter() - t0
    echo(f"\ntotal {seconds:.0f}s")
    return {"rows": rows, "results": all_results, "seconds": seconds, "table": table}
