"""Experiments: the pipeline on top of the library, in rooms that each do one thing.

Imports point down this list (a module imports only modules above it; the command line, :mod:`attrobust.cli`,
sits on top of all of them):

- ``seeding`` (derive_seed), ``provenance`` (file hashes, git state, package version, machine), ``summaries``
  (quartile summaries, NaN -> None), ``distributed`` (torchrun), ``yamlio`` (dataclass <-> dict <-> YAML,
  overrides) and ``config`` (the config dataclasses; re-exports yamlio's functions): no pipeline imports;
- ``protocol``: an evaluation's defaults, description, fingerprint and results path;
- ``results/``: ``schema`` (tables, migrations), ``store`` (the SQLite results database), ``tables`` (the one
  plain-text results table formatter); never imports training or evaluation;
- ``checkpointing``: the run directory's files, ``TrainState`` (save/load of ``state.pt``) and ``TrainResult``;
- ``partials``: an evaluation's per-batch partial results (``--resume``), its lock and the output check;
- ``pipeline``: where a result goes once computed (the results file, the database); train and evaluate hand
  their results to it and never import the store;
- ``train`` (the trainer), ``suite`` (which metric applies to which output, dispatched on the metrics
  registry), ``sampling`` (samples that depend on the model: a seeded draw of the correctly classified),
  ``evaluate`` (the papers' evaluation and the suite, batch by batch);
- ``cost`` (passes and FLOPs of a run's protocol, for dry runs);
- ``report`` (HTML/Markdown from stored results), ``audit`` (your own model), ``bench`` (presets: quickstart,
  paper tables, dry runs).

``store`` and ``cli`` in this package are aliases of their former homes (``results.store``, ``attrobust.cli``).
Images are float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, models return logits ``(N, K)``.
"""

from .config import (
    DataConfig,
    EvalConfig,
    IFIAEvalConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    PGDEvalConfig,
    SuiteConfig,
    TrainConfig,
    apply_overrides,
    from_dict,
    load_yaml,
    merge,
    save_yaml,
    to_dict,
)
from .evaluate import evaluate
from .protocol import eval_defaults
from .report import write_report
from .results.store import Store, open_store
from .results.tables import format_table, table_row
from .train import TrainResult, train

__all__ = [
    "DataConfig",
    "EvalConfig",
    "IFIAEvalConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "PGDEvalConfig",
    "Store",
    "SuiteConfig",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "eval_defaults",
    "evaluate",
    "format_table",
    "from_dict",
    "load_yaml",
    "merge",
    "open_store",
    "save_yaml",
    "table_row",
    "to_dict",
    "train",
    "write_report",
]
