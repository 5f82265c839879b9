"""Experiments: typed configs (YAML), the trainer, the evaluation of the papers' tables and of every metric
(``suite``), presets (``bench``), the results database (``store``), the HTML report, torchrun support
(``distributed``) and the CLI.

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
from .evaluate import evaluate, format_table, table_row
from .protocol import eval_defaults
from .report import write_report
from .results.store import Store, open_store
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
