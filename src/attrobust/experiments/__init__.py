"""Experiments: typed configs (YAML), the trainer, the evaluation of the papers' tables, presets and the CLI.

Images are float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, models return logits ``(N, K)``.
"""

from .config import (
    EVAL_PRESETS,
    DataConfig,
    EvalConfig,
    IFIAEvalConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    PGDEvalConfig,
    TrainConfig,
    apply_overrides,
    eval_defaults,
    from_dict,
    load_yaml,
    merge,
    save_yaml,
    to_dict,
)
from .evaluate import evaluate, format_table, table_row
from .train import TrainResult, train

__all__ = [
    "EVAL_PRESETS",
    "DataConfig",
    "EvalConfig",
    "IFIAEvalConfig",
    "ModelConfig",
    "ObjectiveConfig",
    "OptimConfig",
    "PGDEvalConfig",
    "TrainConfig",
    "TrainResult",
    "apply_overrides",
    "eval_defaults",
    "evaluate",
    "format_table",
    "from_dict",
    "load_yaml",
    "merge",
    "save_yaml",
    "table_row",
    "to_dict",
    "train",
]
