"""The ``attrobust`` command line: list, train, evaluate, runs, leaderboard, report, audit, bench quickstart (and
demo, its alias), bench table(s). Only the command line lives here: each command parses its options, calls the
pipeline (:mod:`attrobust.experiments`) and prints; ``python -m attrobust``, the ``attrobust`` console script
and ``torchrun -m attrobust`` all run :func:`main`. The options and error wrapper the commands share live in
:mod:`attrobust.cli_options`.

Errors in the user's input (a bad config key or value, an unknown name, a missing file) print one line
``error: ...`` on stderr and exit with code 2, without a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from . import __version__
from . import data as data_lib
from . import models as models_lib
from .cli_options import (
    ATTACK_CHOICES,
    FLAG_KEYS,
    DbOption,
    EpsOption,
    EvalConfigOption,
    KOption,
    NoDbOption,
    NOption,
    QuietOption,
    SetOption,
    StepSizeOption,
    db_arg,
    error_message,
    eval_config,
    flag_overrides,
    friendly,
)
from .experiments import catalog, distributed
from .experiments.audit import audit, load_factory, load_weights
from .experiments.bench import dry_run as bench_dry_run
from .experiments.bench import quickstart, table, table_models, table_names
from .experiments.config import TrainConfig, load_yaml
from .experiments.evaluate import evaluate
from .experiments.protocol import summary
from .experiments.report import write_report
from .experiments.results.store import open_store
from .experiments.results.tables import (
    format_leaderboard,
    format_runs,
    format_table,
    leaderboard_csv,
    table_row,
)
from .experiments.suite import SUITE_METRICS
from .experiments.train import train

__all__ = ["FLAG_KEYS", "app", "error_message", "eval_config", "flag_overrides", "friendly", "main", "registries"]


app = typer.Typer(
    name="attrobust",
    help="Attributional robustness of image classifiers: train, attack attributions, evaluate.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    """``--version``: print ``attrobust <version>`` and stop before any command runs."""
    if value:
        typer.echo(f"attrobust {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Attributional robustness of image classifiers: train, attack attributions, evaluate."""


bench_app = typer.Typer(help="Preset benchmarks (train + evaluate + table).", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


def registries() -> dict[str, list[str]]:
    """Registered names of every layer: datasets, models, attributions, attacks, objectives, metrics."""
    names = {kind: registry.names() for kind, registry in catalog.KINDS.items()}
    smoothing = names.pop("smoothing")
    return {**names, "evaluate --metrics": list(SUITE_METRICS), "smoothing": smoothing}


@app.command("list")
@friendly
def list_command(
    kind: Annotated[str | None, typer.Argument(
        help=f"Only this kind ({', '.join(catalog.KINDS)}), each entry with its summary and parameters.")] = None,
    details: Annotated[
        bool, typer.Option("--details", "-d", help="Every entry with its one-line summary and parameters.")
    ] = False,
) -> None:
    """Show the registered datasets, models, attributions, attacks, objectives and metrics; with KIND or
    --details each entry's one-line summary and its parameters with their defaults (`attrobust show NAME`: one)."""
    if kind is not None:
        typer.echo(catalog.format_kind(catalog.kind_of(kind)))
        return
    for group, names in registries().items():
        if not details:
            typer.echo(f"{group + ':':20s} {', '.join(names)}")
        elif group in catalog.KINDS:
            typer.echo(catalog.format_kind(group))
        else:  # the suite's measures, set by the suite.* keys of the evaluation config
            typer.echo(f"{group}: {', '.join(names)} (settings: the suite.* keys of the eval config)")
    if not details:
        typer.echo("\nattrobust list KIND (or --details): summaries and parameters; attrobust show NAME: one entry")


@app.command("show")
@friendly
def show_command(
    name: Annotated[str, typer.Argument(help="A registered name (attrobust list), e.g. trades+igr, ig, mnist.")],
) -> None:
    """What a registered name is and its parameters with their defaults (of every kind that has the name)."""
    if name in SUITE_METRICS and not any(name in registry for registry in catalog.KINDS.values()):
        typer.echo(f"{name} (measure of `attrobust evaluate --metrics`, composed by the evaluation suite)\n"
                   "  settings: the suite.* keys of the evaluation config (--set suite.KEY=VALUE)")  # fmt: skip
        return
    typer.echo("\n\n".join(catalog.format_entry(entry) for entry in catalog.find(name)))


@app.command("train")
@friendly
def train_command(
    config: Annotated[Path, typer.Argument(help="Training config (YAML).")],
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the run's last checkpoint.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if model.pt exists.")] = False,
    sets: SetOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    db: DbOption = None,
    no_db: NoDbOption = False,
) -> None:
    """Train a model from a YAML config; writes <out_dir>/<name>/{model.pt,state.pt,config.yaml,log.jsonl}."""
    cfg = load_yaml(TrainConfig, config, sets or [])
    result = train(cfg, resume=resume, force=force, progress=not quiet, db=db_arg(db, no_db))
    main = distributed.context(cfg.device).main
    distributed.shutdown()
    if not main:
        return
    if result.reused:
        typer.echo(f"{result.model_path} exists with this config; reused it (--force retrains)")
        return
    acc = "" if result.test_acc is None else f"; clean test accuracy {100 * result.test_acc:.2f}%"
    last = result.history[-1] if result.history else {}
    typer.echo(
        f"trained {result.step} steps in {result.seconds:.1f}s (loss {last.get('loss', float('nan')):.4f}, "
        f"acc {last.get('acc', float('nan')):.4f}){acc} -> {result.model_path}"
    )


@app.command("evaluate")
@friendly
def evaluate_command(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt written by `attrobust train`.")],
    n: NOption = None,
    attack: Annotated[str, typer.Option(help="Attacks to run: all, ifia, pgd or none.")] = "all",
    attribution: Annotated[str | None, typer.Option(help="Attribution attacked by IFIA (ig, saliency).")] = None,
    k: KOption = None,
    eps: EpsOption = None,
    step_size: StepSizeOption = None,
    steps: Annotated[int | None, typer.Option(help="IFIA iterations.")] = None,
    pgd_steps: Annotated[int | None, typer.Option(help="PGD iterations.")] = None,
    ig_steps: Annotated[int | None, typer.Option(help="Integrated-gradients path points.")] = None,
    beta: Annotated[float | None, typer.Option(help="Softplus beta of the IFIA surrogate.")] = None,
    restarts: Annotated[int | None, typer.Option(help="IFIA restarts (worst case kept).")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Samples per batch.")] = None,
    metrics: Annotated[
        str | None,
        typer.Option(help="Extra metrics: 'all' or comma-separated names (attrobust list shows them)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Results JSON (default: results.json beside CHECKPOINT).")] = None,
    config: EvalConfigOption = None,
    sets: SetOption = None,
    quiet: QuietOption = False,
    db: DbOption = None,
    no_db: NoDbOption = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue a killed or failed evaluation from its partial results.")
    ] = False,
) -> None:
    """Evaluate a checkpoint: natural acc, PGD acc, IFIA top-k intersection and Kendall (the papers' columns).

    Settings resolve in this order: the paper's defaults for the checkpoint's dataset (configs/defaults/), --config,
    --set, flags. A dataset without a preset has no default budget: give --eps, --step-size and --k. The protocol
    is printed first; results of another protocol are never overwritten (the new ones go to results-<fingerprint>.json).
    Finished batches are kept in <results stem>.partial/ until the results are written; --resume continues from them.
    """
    if attack not in ATTACK_CHOICES:
        raise ValueError(f"--attack: expected one of {', '.join(ATTACK_CHOICES)}, got {attack!r}")
    _, info = models_lib.load(checkpoint)
    flags = flag_overrides(
        n=n, batch_size=batch_size, eps=eps, step_size=step_size, pgd_steps=pgd_steps, attribution=attribution, k=k,
        steps=steps, ig_steps=ig_steps, beta=beta, restarts=restarts, metrics=metrics,
    )  # fmt: skip
    if attack != "all":
        flags.update(skip_pgd=attack != "pgd", skip_ifia=attack != "ifia")
    dataset = ((info.get("config") or {}).get("data") or {}).get("name")
    cfg = eval_config(dataset, config, sets or [], flags)
    say = (lambda _: None) if quiet else typer.echo
    results = evaluate(checkpoint, cfg, progress=not quiet, out=out, db=db_arg(db, no_db), echo=say, resume=resume)
    main = distributed.context(cfg.device).main
    distributed.shutdown()
    if not main:
        return
    typer.echo(format_table([table_row(checkpoint.parent.name or str(checkpoint), results)]))
    typer.echo(f"results: {results.get('path')}")


@app.command("runs")
@friendly
def runs_command(
    kind: Annotated[str | None, typer.Option(help="Only 'train' or 'evaluate' runs.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Only runs on this dataset.")] = None,
    limit: Annotated[int | None, typer.Option(help="At most this many (newest first).")] = None,
    db: DbOption = None,
) -> None:
    """List the recorded training runs and evaluations, newest first."""
    dataset = None if dataset is None else data_lib.canonical_name(dataset)
    with open_store(db, create=False) as store:
        rows = store.runs(kind=kind, dataset=dataset, limit=limit)
    typer.echo(format_runs(rows) if rows else f"no runs recorded in {store.path} matching these filters")


@app.command("leaderboard")
@friendly
def leaderboard_command(
    dataset: Annotated[str, typer.Option(help="Dataset whose models are ranked.")],
    metric: Annotated[str, typer.Option(
        help="Metric, or comma-separated metrics shown side by side (the first ranks): topk, kendall, natural_acc, "
             "pgd_acc, test_acc, ...")] = "topk",
    protocol: Annotated[
        str | None, typer.Option(help="Evaluation protocol (fingerprint or prefix; default: the one with most models).")
    ] = None,
    ascending: Annotated[bool, typer.Option("--ascending", help="Lowest value first.")] = False,
    limit: Annotated[int | None, typer.Option(help="At most this many rows.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table to this CSV file.")] = None,
    db: DbOption = None,
) -> None:
    """Rank the models of a dataset by a metric within one evaluation protocol (each model's most recent result
    of it); the other protocols present are listed with how to select them."""
    dataset = data_lib.canonical_name(dataset)  # fashion-mnist and fashion_mnist rank the same runs
    names = [m.strip() for m in metric.split(",") if m.strip()]
    if not names:
        raise ValueError(f"--metric: expected one or more comma-separated metric names, got {metric!r}")
    if csv is not None and csv.is_dir():
        raise ValueError(f"--csv: expected a file to write, got the directory {csv}")
    first = names[0]
    with open_store(db, create=False) as store:
        extra = list(dict.fromkeys(store.resolve_metric(m) for m in names[1:]))
        chosen = store.select_protocol(dataset, first, protocol)
        rows = store.leaderboard(dataset, first, descending=not ascending, limit=limit, protocol=protocol)
        others = [p for p in store.protocols(dataset, first) if chosen is None or p["newest"] != chosen["newest"]]
        measured = {r["id"]: r["metrics"] for r in store.runs(dataset=dataset)} if extra else {}
    if chosen is None:
        typer.echo(f"no completed {first} results for dataset {dataset!r}")
        return
    for r in rows:
        r["values"] = {m: measured.get(r["run_id"], {}).get(m) for m in extra}

    def describe(p: dict[str, Any]) -> str:
        if p["protocol"] is not None:
            return summary(p["protocol"]).removeprefix("protocol: ")
        return "no protocol recorded (training runs, or evaluations whose config could not be read)"

    typer.echo(f"protocol {chosen['fingerprint'] or 'none'}: {describe(chosen)}")
    typer.echo(format_leaderboard(rows, extra))
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text(leaderboard_csv(rows, extra), encoding="utf-8")
        typer.echo(f"csv: {csv}")
    if others:
        typer.echo(f"\nother protocols for {dataset} {first} (select one with --protocol FINGERPRINT):")
        for p in others:
            count = f"{p['models']} model{'s' if p['models'] != 1 else ''}"
            typer.echo(f"  {p['fingerprint'] or 'none'} ({count}): {describe(p)}")


def _name_value(item: str, what: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or not name or not value:
        raise ValueError(f"{what}: expected NAME=PATH, got {item!r}")
    return name, value


@app.command("report")
@friendly
def report_command(
    results: Annotated[list[str], typer.Argument(help="results.json files of `attrobust evaluate` (or NAME=PATH).")],
    out: Annotated[Path, typer.Option(
        "--out", help="Directory for report.html, report.md, the figures (PNG, PDF) and tables (CSV, LaTeX).")],
    models: Annotated[
        list[str] | None,
        typer.Option("--models", hidden=True, help="Deprecated, ignored: grids come from the stored examples."),
    ] = None,
    title: Annotated[str, typer.Option(help="Heading of the report.")] = "attrobust report",
    published: Annotated[
        Path | None, typer.Option(help="YAML/JSON: model -> {natural_acc, pgd_acc, topk, kendall} (fractions).")
    ] = None,
    n_examples: Annotated[int, typer.Option(help="At most this many stored examples per saliency grid.")] = 4,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only the paths written.")] = False,
) -> None:
    """Write an HTML report (self-contained) and a Markdown summary of evaluation results."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: expected a directory for the report (existing or to create), got the existing file "
                         f"{out}")  # fmt: skip
    items: list[Any] = [
        _name_value(r, "RESULTS") if "=" in r and not Path(r).exists() else r for r in results
    ]  # fmt: skip
    pub = None
    if published is not None:
        if not published.is_file():
            raise FileNotFoundError(f"--published: file not found: {published}")
        try:
            pub = yaml.safe_load(published.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"--published: expected a YAML/JSON mapping, got a parse error: {err}") from None
    if models:
        typer.echo("warning: --models is deprecated and ignored: the saliency-map grids now come from the examples "
                   "stored with the results", err=True)  # fmt: skip
    html_path, md_path = write_report(items, out, title=title, published=pub, n_examples=n_examples,
                                      echo=None if quiet else typer.echo)  # fmt: skip
    typer.echo(f"html: {html_path}")
    typer.echo(f"markdown: {md_path}")


QuickOut = Annotated[Path, typer.Option("--out-dir", help="Root directory of the runs.")]
QuickBudget = Annotated[str, typer.Option(help="cpu (minutes on 2 cores) or full (longer training, paper eval).")]
QuickForce = Annotated[bool, typer.Option("--force", help="Retrain and re-evaluate.")]


@bench_app.command("quickstart")
@friendly
def quickstart_command(
    out_dir: QuickOut = Path("runs"), budget: QuickBudget = "cpu", force: QuickForce = False, quiet: QuietOption = False
) -> None:
    """small_cnn on MNIST: natural, PGD-AT, TRADES+IGR, IG-SUM-NORM, ART, median smoothing; table and report."""
    quickstart(out_dir, budget, force=force, progress=not quiet, echo=typer.echo)


AuditSteps = Annotated[int | None, typer.Option(help="IFIA iterations.")]
AuditPgdSteps = Annotated[int | None, typer.Option(help="PGD iterations.")]
AuditIgSteps = Annotated[int | None, typer.Option(help="Integrated-gradients path points.")]
AuditBatch = Annotated[int | None, typer.Option(help="Samples per batch.")]
AuditBeta = Annotated[float | None, typer.Option(help="Softplus beta of the IFIA surrogate (default: the protocol's).")]
AuditRestarts = Annotated[int | None, typer.Option(help="IFIA restarts (worst case kept).")]
AuditAttribution = Annotated[str | None, typer.Option(help="Attribution attacked by IFIA (ig, saliency).")]
AuditSample = Annotated[str, typer.Option(
    help="balanced (a seeded order covering every class), first or seeded (as --set sample= of evaluate).")]
AuditDevice = Annotated[str | None, typer.Option(help="cpu, cuda or auto (CUDA when available); default cpu.")]
AuditSize = Annotated[int | None, typer.Option(
    help="Resize a folder's images to SIZE x SIZE (default: the model's declared size, else the images' own).")]


@app.command("audit")
@friendly
def audit_command(
    model: Annotated[str, typer.Option("--model", help="package.module:factory returning your nn.Module.")],
    data: Annotated[str, typer.Option("--data", help="A dataset name (attrobust list) or a folder of class folders.")],
    weights: Annotated[
        Path | None, typer.Option(help="Weights: .safetensors, or a state dict .pt (torch.load weights_only=True).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where on-disk datasets live.")] = None,
    size: AuditSize = None,
    n: NOption = None,
    attack: Annotated[str, typer.Option(help="Attacks to run: all, ifia, pgd or none.")] = "all",
    attribution: AuditAttribution = None,
    eps: EpsOption = None,
    step_size: StepSizeOption = None,
    k: KOption = None,
    steps: AuditSteps = None,
    pgd_steps: AuditPgdSteps = None,
    ig_steps: AuditIgSteps = None,
    beta: AuditBeta = None,
    restarts: AuditRestarts = None,
    batch_size: AuditBatch = None,
    sample: AuditSample = "balanced",
    device: AuditDevice = None,
    metrics: Annotated[str | None, typer.Option(help="Extra metrics: 'all' or comma-separated names.")] = None,
    config: EvalConfigOption = None,
    sets: SetOption = None,
    out: Annotated[Path, typer.Option(help="Output folder (results.json, report.html, report.md).")] = Path("audit"),
    quiet: QuietOption = False,
) -> None:
    """Audit your own model: attributional-robustness evaluation and report for any nn.Module on [0,1] images.

    The protocol is the data's paper preset (a folder of images has none: give --eps, --step-size and --k), then
    --config, --set and the options, as for `evaluate`; it is printed with an estimate of the run time first.
    """
    if attack not in ATTACK_CHOICES:
        raise ValueError(f"--attack: expected one of {', '.join(ATTACK_CHOICES)}, got {attack!r}")
    chosen = [item for item in sets or [] if item.partition("=")[0].strip() == "sample"]
    if chosen:
        raise ValueError(f"--set sample: expected --sample balanced|first|seeded on audit, got --set {chosen[0]}")
    sys.path.insert(0, str(Path.cwd()))
    net = load_factory(model)
    if weights is not None:
        load_weights(net, weights)
    net.eval()  # a factory returns a module in train mode; the audit evaluates it in eval mode
    given = locals()  # every option of FLAG_KEYS is an option of this command, spelled as in `evaluate`
    flags = flag_overrides(metrics=metrics, **{flag: given[flag] for flag in FLAG_KEYS})
    if attack != "all":
        flags.update(skip_pgd=attack != "pgd", skip_ifia=attack != "ifia")
    cfg = None
    if config is not None or sets or flags:
        cfg = eval_config(None if Path(data).is_dir() else data, config, sets or [], flags)
    say = (lambda _: None) if quiet else typer.echo
    result = audit(net, data, data_dir=data_dir, size=size, config=cfg, sample=sample, device=device, out_dir=out,
                   progress=not quiet, echo=say)  # fmt: skip
    typer.echo(format_table([table_row(type(net).__name__, result["results"])]))
    for message in result["warnings"]:
        typer.echo(f"warning: {message}")
    typer.echo(f"html: {result['report'][0]}")
    typer.echo(f"markdown: {result['report'][1]}")


@bench_app.command("table")
@friendly
def table_command(
    name: Annotated[str, typer.Argument(help="A paper table preset (attrobust bench tables lists them).")],
    out_dir: QuickOut = Path("runs"),
    budget: Annotated[str, typer.Option(help="cpu (shrunk to run on 2 cores) or paper (GPU, real data).")] = "cpu",
    models: Annotated[str | None, typer.Option(help="Comma-separated subset of the table's models.")] = None,
    force: QuickForce = False,
    quiet: QuietOption = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print each run's resolved settings and estimated cost "
                                          "(NAME 'all': every table); train, evaluate and write nothing.")] = False,
    device: Annotated[str | None, typer.Option(
        help="Run every training and evaluation on this device (e.g. cuda) instead of the presets' cpu.")] = None,
) -> None:
    """Reproduce a source paper's table: train, evaluate, print ours and write the report beside the paper's."""
    # the preset files name a composite with "_" (trades_igr.yaml); its objective's spelling trades+igr reads the same
    chosen = [m.strip().replace("+", "_") for m in models.split(",") if m.strip()] if models else None
    if dry_run:
        for each in table_names() if name == "all" else [name]:
            bench_dry_run(each, budget, models=chosen, echo=typer.echo, device=device)
        return
    table(name, out_dir, budget, models=chosen, force=force, progress=not quiet, echo=typer.echo, device=device)


@bench_app.command("tables")
@friendly
def tables_command() -> None:
    """List the paper table presets and their models (in the order of the paper's rows)."""
    for name in table_names():
        typer.echo(f"{name:22s} {', '.join(table_models(name))}")


demo_command = app.command("demo", help="Same as `attrobust bench quickstart`.")(quickstart_command)


def main() -> None:
    """Console entry point (``attrobust``)."""
    app()
