"""Preset benchmarks: train and evaluate a set of models from ``configs/``, print the papers' table and write
the HTML report.

``quickstart`` (what ``make demo`` runs) trains ``small_cnn`` on MNIST naturally and with PGD adversarial
training, fine-tunes the natural model with TRADES + IGR, IG-SUM-NORM and ART, and fine-tunes the PGD-AT model
with a median feature-map smoothing block inserted (``configs/quickstart_*.yaml``). It evaluates every model with
``configs/quickstart_eval.yaml`` (on top of the RAR paper's MNIST evaluation defaults; natural and PGD accuracy,
IFIA top-k intersection and Kendall, Gini), prints model | natural acc | PGD acc | top-k | Kendall | no-valid |
Gini and writes ``<out_dir>/quickstart_report/report.html`` (+ ``report.md``). Finished checkpoints and results
are reused, so a second run only redraws the report; an interrupted training resumes where its last checkpoint
left it. A bar over the stages shows the progress and the estimated time left.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from tqdm.auto import tqdm

from . import cost
from . import protocol as protocol_lib
from .config import EvalConfig, TrainConfig, load_yaml, merge, merge_yaml, to_dict
from .evaluate import evaluate, flat_start_line
from .protocol import config_dir, eval_defaults
from .provenance import file_sha256
from .report import write_report
from .results.tables import format_table, table_row, text_table
from .train import train

# (label, preset file, label of the earlier model it is fine-tuned from, or None)
QUICKSTART = {
    "models": (
        ("natural", "quickstart_natural.yaml", None),
        ("pgd_at", "quickstart_pgd_at.yaml", None),
        ("trades+igr", "quickstart_trades_igr.yaml", "natural"),
        ("ig_sum_norm", "quickstart_ig_sum_norm.yaml", "natural"),
        ("art", "quickstart_art.yaml", "natural"),
        ("median+pgd_at", "quickstart_median_pgd_at.yaml", "pgd_at"),
    ),
    "eval": "quickstart_eval.yaml",
    "report": "quickstart_report",
}
# relative cost of each stage for the progress bar's time estimate (measured on 2 CPU cores)
_STAGE_WEIGHT = {"train": 3.0, "evaluate": 1.0, "report": 1.0}

# Overrides per budget, applied on top of the preset files: "cpu" runs the files as written (minutes on two
# cores); "full" trains on the whole training set for longer (the paper's 40-step inner attack) and evaluates
# 1000 samples with the RAR paper's IFIA setting (100 steps, IG with 100 points, best of 3 restarts): hours on
# a CPU. Runs of a budget other than "cpu" are named <preset name>_<budget>.
_FULL_ATTACK = "eps: 0.3, step_size: 0.01, steps: 40"
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
                f"objective.params={{{_FULL_ATTACK}, random_start: true, eps_warmup: 2000}}",
            ],
            "trades+igr": ["steps=5000", f"objective.params={{beta: 6.0, lam: 1.0, ig_steps: 10, {_FULL_ATTACK}}}"],
            "ig_sum_norm": ["steps=5000", f"objective.params={{beta: 0.1, ig_steps: 50, attack_ig_steps: 10, "
                                          f"{_FULL_ATTACK}}}"],
            "art": ["steps=5000", "objective.params={lam: 0.5, beta: 50.0, eps: 0.3, step_size: 0.1, steps: 3}"],
            "median+pgd_at": ["steps=5000", f"objective.params={{{_FULL_ATTACK}, random_start: true}}"],
        },
        "eval": {"n": 1000, "ifia": {"steps": 100, "ig_steps": 100, "restarts": 3}},
    },
}


def quickstart_configs(
    out_dir: str | Path = "runs", budget: str = "cpu", presets: str | Path | None = None
) -> tuple[list[tuple[str, TrainConfig]], EvalConfig]:
    """The resolved training configs ``[(label, TrainConfig)]`` and the evaluation config of the quickstart."""
    if budget not in BUDGETS:
        raise ValueError(f"budget: expected one of {', '.join(map(repr, BUDGETS))}, got {budget!r}")
    presets = Path(presets) if presets is not None else config_dir()
    overrides = BUDGETS[budget]
    runs: list[tuple[str, TrainConfig]] = []
    for label, filename, source in QUICKSTART["models"]:
        extra = [*overrides["train"].get(label, []), f"out_dir={out_dir}"]
        if budget != "cpu":
            extra.append(f"name={Path(filename).stem}_{budget}")
        if source is not None:
            earlier = dict(runs)
            if source not in earlier:
                raise ValueError(f"quickstart: {label} is fine-tuned from {source}, which must come before it")
            extra.append(f"init={Path(out_dir) / earlier[source].name}")
        runs.append((label, load_yaml(TrainConfig, presets / filename, extra)))
    eval_cfg = merge_yaml(eval_defaults(runs[0][1].data.name), presets / QUICKSTART["eval"])
    return runs, merge(eval_cfg, overrides["eval"])


def _results_target(run_dir: Path, eval_cfg: EvalConfig, cfg: TrainConfig) -> tuple[Path, str]:
    """Where this protocol's results of a run live (``results.json``, or ``results-<fingerprint>.json`` when
    that file holds another protocol's results) and the protocol's fingerprint."""
    data = protocol_lib.data_identity(eval_cfg, to_dict(cfg)["data"])
    fingerprint = protocol_lib.fingerprint(protocol_lib.describe(eval_cfg, data))
    return protocol_lib.results_path(run_dir / "results.json", fingerprint), fingerprint


def _reusable(path: Path, fingerprint: str, checkpoint: Path) -> dict[str, Any] | None:
    """The results at ``path`` when they are of this protocol (``fingerprint``) and this checkpoint."""
    if not path.is_file():
        return None
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    found = protocol_lib.of_results(results)
    same_protocol = found is not None and found[1] == fingerprint
    same_model = results.get("checkpoint_sha256") == file_sha256(checkpoint)
    return results if same_protocol and same_model else None


def _train_and_evaluate(
    runs: list[tuple[str, TrainConfig]],
    evals: list[tuple[str, EvalConfig]],
    *,
    force: bool,
    progress: bool,
    echo: Callable[[str], None],
    bar: Any,
) -> tuple[dict[str, list[dict[str, str]]], dict[str, dict[str, Any]]]:
    """Train (or reuse) every run and evaluate (or reuse) it with every evaluation ``(eval label, config)``; the
    table rows per evaluation label (the papers' columns, :func:`table_row`; :func:`_further_row` for the further
    evaluations and for one that runs neither PGD nor IFIA) and the results by ``label`` (``label [eval label]``
    for the further ones)."""
    rows: dict[str, list[dict[str, str]]] = {what: [] for what, _ in evals}
    all_results = {}
    for label, cfg in runs:
        bar.set_postfix_str(f"train {label}")
        result = train(cfg, resume=True, force=force, progress=progress)
        bar.update(_STAGE_WEIGHT["train"])
        verb = "reused" if result.reused else f"trained in {result.seconds:.0f}s"
        acc = "" if result.test_acc is None else f", clean test accuracy {100 * result.test_acc:.2f}%"
        echo(f"{label}: {verb} -> {result.model_path}{acc}")
        for what, eval_cfg in evals:
            name = f"{label} [{what}]" if what else label
            results_path, fingerprint = _results_target(result.run_dir, eval_cfg, cfg)
            results = None if force else _reusable(results_path, fingerprint, result.model_path)
            bar.set_postfix_str(f"evaluate {name}")
            if results is None:  # the protocol was printed once before the runs
                results = evaluate(result.model_path, eval_cfg, progress=progress, out=results_path,
                                   echo=lambda _: None)  # fmt: skip
                echo(f"{name}: evaluated in {results['timings']['total']:.0f}s -> {results_path}")
            else:
                echo(f"{name}: reused {results_path}")
            if flat_start_line(results["summary"]):
                echo(f"{name}: {flat_start_line(results['summary'])}")
            bar.update(_STAGE_WEIGHT["evaluate"])
            all_results[name] = results
            # an evaluation that measures only suite metrics (the bounds tables) shows them, whichever it is
            metrics_only = eval_cfg.skip_pgd and eval_cfg.skip_ifia and bool(eval_cfg.metrics)
            further = bool(what) or metrics_only
            rows[what].append(_further_row(label, results, eval_cfg) if further else table_row(label, results))
    return rows, all_results


def _further_row(label: str, results: dict[str, Any], eval_cfg: EvalConfig) -> dict[str, str]:
    """The row of a further evaluation: the papers' columns (:func:`table_row`) when it runs PGD or IFIA (e.g.
    the RAR appendix's IFIA on simple-gradient maps), else the model and its samples; then the mean of each suite
    metric asked for."""
    found = results["summary"].get("metrics") or {}
    attacks = not (eval_cfg.skip_pgd and eval_cfg.skip_ifia)
    row = table_row(label, results) if attacks else {"model": label, "n": str(results["summary"]["n"])}
    for metric in eval_cfg.metrics:
        mean = (found.get(metric) or {}).get("mean")
        row[metric] = "-" if mean is None else f"{mean:.4f}"
    return row


def _stage_bar(n_runs: int, report: bool, progress: bool, desc: str, n_evals: int = 1) -> Any:
    """A bar over the stages (train, evaluate per run and evaluation, then the report) weighted by their usual
    cost, with ETA."""
    per_run = _STAGE_WEIGHT["train"] + n_evals * _STAGE_WEIGHT["evaluate"]
    total = n_runs * per_run + (_STAGE_WEIGHT["report"] if report else 0)
    return tqdm(total=total, desc=desc, unit="", disable=not progress,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}] {postfix}")  # fmt: skip


def _protocol(eval_cfg: EvalConfig, train_cfg: TrainConfig) -> str:
    """The evaluation protocol of the runs (all on ``train_cfg``'s data), as printed before and with the table;
    an unset budget raises ``ValueError`` here, before any training."""
    protocol_lib.check_budget(eval_cfg, eval_cfg.dataset or train_cfg.data.name, eval_cfg.metrics)
    protocol = protocol_lib.describe(eval_cfg, protocol_lib.data_identity(eval_cfg, to_dict(train_cfg)["data"]))
    return "\n  ".join(protocol_lib.lines(protocol, protocol_lib.fingerprint(protocol)))


def quickstart(
    out_dir: str | Path = "runs",
    budget: str = "cpu",
    *,
    force: bool = False,
    progress: bool = True,
    presets: str | Path | None = None,
    echo: Callable[[str], None] = print,
    report: bool = True,
) -> dict[str, Any]:
    """Train (or reuse) the quickstart models, evaluate (or reuse) them, print the table with ``echo`` and write
    the report (``report=False`` skips it).

    Returns ``{"rows": [table_row...], "results": {label: results}, "seconds": float, "table": str,
    "report": (html_path, md_path) | None}``.
    """
    t0 = time.perf_counter()
    runs, eval_cfg = quickstart_configs(out_dir, budget, presets)
    preset = _Preset("quickstart", Path(out_dir) / QUICKSTART["report"], "attrobust quickstart (MNIST, small_cnn)",
                     None, report, echo)  # fmt: skip
    return _run_preset(preset, runs, [("", eval_cfg)], force=force, progress=progress, t0=t0)


@dataclass(frozen=True)
class _Preset:
    """How a preset benchmark is shown: its progress bar's ``name``, where its report goes (``report_dir``,
    ``title``, the ``published`` figures beside ours), whether to write it, and where text goes (``echo``)."""

    name: str
    report_dir: Path
    title: str
    published: dict[str, Any] | None
    report: bool
    echo: Callable[[str], None]


def _run_preset(
    preset: _Preset,
    runs: list[tuple[str, TrainConfig]],
    evals: list[tuple[str, EvalConfig]],
    *,
    force: bool,
    progress: bool,
    t0: float,
) -> dict[str, Any]:
    """Print the protocols, train every run and evaluate it with every evaluation ``(label, config)`` (the first,
    label ``""``, gives the papers' table), reusing what is done; print each protocol and its table, write the
    report, print the total time and the report's path."""
    echo = preset.echo
    protocols = {what: _protocol(cfg, runs[0][1]) for what, cfg in evals}
    for what, protocol in protocols.items():
        echo(f"[{what}] {protocol}" if what else protocol)
    bar = _stage_bar(len(runs), preset.report, progress, preset.name, len(evals))
    rows, all_results = _train_and_evaluate(runs, evals, force=force, progress=progress, echo=echo, bar=bar)
    tables = {what: format_table(rows[what]) if "top-k" in rows[what][0] else text_table(list(rows[what][0]), [
        list(r.values()) for r in rows[what]], trim=False) for what in rows}  # fmt: skip
    for what, protocol in protocols.items():
        echo(f"\n[{what}] {protocol}\n" if what else f"\n{protocol}\n")
        echo(tables[what])
    table = tables[""]
    paths = None
    if preset.report:
        bar.set_postfix_str("report")
        paths = write_report(all_results, preset.report_dir, title=preset.title, published=preset.published,
                             n_examples=3)  # fmt: skip
        bar.update(_STAGE_WEIGHT["report"])
    bar.close()
    seconds = time.perf_counter() - t0
    echo(f"\ntotal {seconds:.0f}s")
    if paths is not None:
        echo(f"report: {paths[0]}")
    return {"rows": rows[""], "results": all_results, "seconds": seconds, "table": table, "report": paths,
            "tables": tables}  # fmt: skip


TABLE_BUDGETS = ("cpu", "paper")


def table_names(presets: str | Path | None = None) -> list[str]:
    """The paper-table presets: directories of ``configs/`` with an ``_eval.yaml`` (e.g. ``rar_mnist``)."""
    root = Path(presets) if presets is not None else config_dir()
    return sorted(p.parent.name for p in root.glob("*/_eval.yaml"))


def _published(folder: Path, stem: str = "_published") -> dict[str, Any]:
    """The published figures of the table in ``folder`` (its ``<stem>.yaml``; ``{}`` without one)."""
    path = folder / f"{stem}.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def table_models(name: str, presets: str | Path | None = None) -> list[str]:
    """The models of table ``name`` (its ``<model>.yaml`` presets) in the order of the paper's rows (the rows of
    ``_published.yaml``, a further evaluation's ``"<model> [<label>]"`` rows counting for their model, then those
    of ``_published_bounds.yaml``), then those the paper has no row of, by name."""
    folder = (Path(presets) if presets is not None else config_dir()) / name.replace("-", "_")
    return _paper_order(folder, _published(folder))


def _paper_order(folder: Path, published: dict[str, Any]) -> list[str]:
    """:func:`table_models` of the table in ``folder`` whose ``_published.yaml`` is ``published``."""
    stems = (p.stem for p in folder.glob("*.yaml") if not p.stem.startswith("_") and p.stem[-4:] != "_cpu")
    rows = [*published, *_published(folder, "_published_bounds")]
    rank = {m: i for i, m in enumerate(dict.fromkeys(str(key).split(" [")[0] for key in rows))}
    return sorted(stems, key=lambda m: (rank.get(m, len(rank)), m))


def table_configs(
    name: str,
    out_dir: str | Path = "runs",
    budget: str = "cpu",
    presets: str | Path | None = None,
    models: list[str] | None = None,
) -> tuple[list[tuple[str, TrainConfig]], EvalConfig, dict[str, Any]]:
    """The runs ``[(model, TrainConfig)]`` (in the paper's row order, :func:`table_models`; ``models`` in the order
    given), the evaluation config and the published figures of table ``name``.

    ``budget="paper"`` uses the papers' settings (``<model>.yaml``, ``_eval.yaml``: GPU-scale); ``"cpu"`` the
    ``<model>_cpu.yaml`` variants and ``_eval_cpu.yaml`` on top of ``_eval.yaml``. ``models`` picks a subset.
    Dashes in ``name`` read as underscores (``rar-mnist``).
    """
    root = Path(presets) if presets is not None else config_dir()
    name = name.replace("-", "_")
    valid = table_names(root)
    if name not in valid:
        raise ValueError(f"table: unknown {name!r}; expected one of: {', '.join(valid)}")
    if budget not in TABLE_BUDGETS:
        raise ValueError(f"budget: expected one of {', '.join(map(repr, TABLE_BUDGETS))}, got {budget!r}")
    folder = root / name
    published = _published(folder)
    available = _paper_order(folder, published)
    chosen = models if models else available
    unknown = [m for m in chosen if m not in available]
    if unknown:
        expected = ", ".join(available)
        raise ValueError(f"models: unknown {', '.join(unknown)} in table {name!r}; expected some of: {expected}")
    suffix = "_cpu" if budget == "cpu" else ""
    runs = [(m, load_yaml(TrainConfig, folder / f"{m}{suffix}.yaml", [f"out_dir={out_dir}"])) for m in chosen]
    eval_cfg = _table_eval(folder, "_eval", runs[0][1].data.name, budget)
    # a further evaluation's figures are keyed "<model> [<label>]" (the name of its results)
    return runs, eval_cfg, {m: v for m, v in published.items() if str(m).split(" [")[0] in chosen}


def _table_eval(folder: Path, stem: str, dataset: str, budget: str) -> EvalConfig:
    """The evaluation ``<stem>.yaml`` of a table on top of ``dataset``'s defaults; with the ``cpu`` budget,
    ``_eval_cpu.yaml`` (the table's CPU shrinking) and then ``<stem>_cpu.yaml`` on top, where they exist."""
    eval_cfg = merge_yaml(eval_defaults(dataset), folder / f"{stem}.yaml")
    if budget == "cpu":
        for overlay in dict.fromkeys(("_eval_cpu", f"{stem}_cpu")):
            if (folder / f"{overlay}.yaml").is_file():
                eval_cfg = merge_yaml(eval_cfg, folder / f"{overlay}.yaml")
    return eval_cfg


def table_evaluations(
    name: str, budget: str = "cpu", presets: str | Path | None = None
) -> list[tuple[str, EvalConfig]]:
    """Every evaluation of table ``name``: ``("", _eval.yaml)`` (the papers' table of accuracies and IFIA), then
    ``(label, _eval.<label>.yaml)`` for each further evaluation of the folder (e.g. the smoothing paper's metrics
    of one attribution method; ``_eval.<label>_cpu.yaml`` shrinks one further), each resolved like
    ``_eval.yaml`` (:func:`table_configs`)."""
    runs, main, _ = table_configs(name, "runs", budget, presets)
    folder = (Path(presets) if presets is not None else config_dir()) / name.replace("-", "_")
    labels = sorted(p.stem[len("_eval.") :] for p in folder.glob("_eval.*.yaml") if not p.stem.endswith("_cpu"))
    dataset = runs[0][1].data.name
    return [("", main), *((label, _table_eval(folder, f"_eval.{label}", dataset, budget)) for label in labels)]


# the same keyword options as quickstart's, on purpose: the two public entry points of the presets take them alike
def table(
    name: str,
    out_dir: str | Path = "runs",
    budget: str = "cpu",
    *,
    models: list[str] | None = None,
    force: bool = False,
    progress: bool = True,
    presets: str | Path | None = None,
    echo: Callable[[str], None] = print,
    report: bool = True,
    device: str | None = None,
) -> dict[str, Any]:
    """Reproduce a source paper's table: train (or reuse) and evaluate its models, print ours and write the report
    with the published figures beside ours (``<out_dir>/<table>_<budget>_report/``). Returns like :func:`quickstart`.
    The ``paper`` budget needs a GPU and the real dataset; ``cpu`` shrinks every model to run on two cores.
    ``device`` (e.g. ``"cuda"``) replaces the presets' ``device`` in every training and evaluation (the
    evaluation protocol's fingerprint does not include the device).
    """
    t0 = time.perf_counter()
    runs, _, published = table_configs(name, out_dir, budget, presets, models)
    evals = table_evaluations(name, budget, presets)
    if device is not None:
        runs = [(label, replace(cfg, device=device)) for label, cfg in runs]
        evals = [(what, replace(cfg, device=device)) for what, cfg in evals]
    name = name.replace("-", "_")
    preset = _Preset(name, Path(out_dir) / f"{name}_{budget}_report", f"attrobust: {name}", published or None, report,
                     echo)  # fmt: skip
    return _run_preset(preset, runs, evals, force=force, progress=progress, t0=t0)


def _settings(cfg: TrainConfig) -> list[str]:
    """The resolved training settings of a run, a few lines of flow-style YAML."""
    data = {k: v for k, v in to_dict(cfg)["data"].items() if v not in (None, {}) and k != "name"}
    flow = lambda value: yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()  # noqa: E731
    optim = {k: v for k, v in to_dict(cfg)["optim"].items() if v not in (None, [], False)}
    length = f"{cfg.epochs} epochs" if cfg.epochs is not None else f"{cfg.steps} steps"
    return [
        f"data {cfg.data.name} {flow(data)}; model {cfg.model.name} {flow(cfg.model.kwargs)}",
        f"objective {cfg.objective.name} {flow(cfg.objective.params)}",
        f"optim {flow(optim)}; {length} of batch {cfg.batch_size}; seed {cfg.seed}",
    ]


def dry_run(
    name: str,
    budget: str = "paper",
    *,
    models: list[str] | None = None,
    presets: str | Path | None = None,
    device: str | None = None,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Print what ``attrobust bench table NAME --budget BUDGET`` would run, without running or writing anything:
    each run's resolved training settings and the cost estimate of its training (:mod:`.cost`), then each
    evaluation's protocol and its cost per model, and the total. ``device`` picks the assumed throughput
    (default: ``cuda`` for the ``paper`` budget, ``cpu`` for ``cpu``). Returns ``{"train": {model: Estimate},
    "evaluate": {(model, label): Estimate}, "hours": float}``."""
    runs, _, _ = table_configs(name, "runs", budget, presets, models)
    evals = table_evaluations(name, budget, presets)
    device = device or ("cuda" if budget == "paper" else "cpu")
    tflops = cost.ASSUMED_TFLOPS["cuda" if device.startswith("cuda") else "cpu"]
    echo(f"dry run of {name.replace('-', '_')} ({budget} budget): nothing is trained, evaluated or written. Cost: "
         f"passes (forward + backward of one image) counted from the protocol, x 6 x the forward MACs of the model "
         f"(counted on the meta device) = FLOPs, at an assumed {tflops:g} TFLOP/s ({device}); see "
         f"attrobust.experiments.cost")  # fmt: skip
    trained = {label: cost.training(cfg, device) for label, cfg in runs}
    for label, cfg in runs:
        echo(f"\nrun {label} ({cfg.name}):")
        for line in _settings(cfg):
            echo(f"  {line}")
        echo(f"  training cost: {trained[label].line()}")
    evaluated = {}
    for what, eval_cfg in evals:
        echo(f"\nevaluation{f' [{what}]' if what else ''}:\n  {_protocol(eval_cfg, runs[0][1])}")
        for label, cfg in runs:
            evaluated[(label, what)] = cost.evaluation(eval_cfg, cfg, device)
            echo(f"  {label}: {evaluated[(label, what)].line()}")
    hours = cost.total_hours([*trained.values(), *evaluated.values()])
    echo(f"\ntotal: about {hours:,.1f} h at {tflops:g} TFLOP/s ({len(runs)} runs, {len(evals)} evaluation(s) each)")
    return {"train": trained, "evaluate": evaluated, "hours": hours}
