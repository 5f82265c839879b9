"""The evaluation protocol: where its defaults come from, what it is, its fingerprint and where its results go.

Defaults. A dataset's evaluation defaults are the paper preset named by ``configs/defaults/<dataset>.yaml``
(a file that ``extends:`` one table's ``_eval.yaml``, with the reason for the choice in its comment): the YAML
files are the only source of the numbers. :class:`~.config.EvalConfig` itself states no budget (``eps``,
``step_size``, ``k`` are None), so a dataset without such a file (``cub``, ``synthetic``, a folder of images,
any unregistered data) has no default budget and :func:`check_budget` refuses to run until it is given.

Protocol. :func:`describe` turns a resolved config into the settings that decide the numbers: the data
(name, split and loader options), the sample (``n``, ``sample``, ``seed``), ``batch_size``, the device type and
the sections of the attacks and metrics that run. :func:`fingerprint` hashes it (sha256 of canonical JSON, first
12 hex digits).

- ``batch_size`` is in it: the attacks draw their random numbers from generators seeded per batch
  (``derive_seed(seed, "pgd/<batch>")``), so another batch size gives other random starts and other numbers.
- The device *type* is in it (``cpu``, ``cuda``, ...), not its index: torch generators of different device types
  give different random streams for one seed, so the random starts differ; ``cuda:0`` and ``cuda:1`` draw the
  same numbers. Floating-point differences between machines are not protocol: the torch version and the machine
  are recorded beside the result.
- Left out because they cannot change a number: ``data_dir`` (where the files are, not which data), ``examples``
  (how many saliency examples are kept for the report; they draw from their own generators), the number of
  processes (batches keep their seeds in whichever process runs them), progress bars, output paths and the
  database. The section of an attack that is skipped (``skip_pgd``, ``skip_ifia``) is left out (the ``ifia``
  section stays when suite metrics run: they use its attribution, IG points, beta and eps); ``metrics`` and
  ``suite`` appear only when metrics are requested.
- Every other field of ``EvalConfig``, including any added later, is in it by construction.

Results. :func:`results_path` keeps results of different protocols apart: a results file is replaced only by
results of the same protocol; otherwise the new results go beside it, named ``<stem>-<fingerprint>.json``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data import canonical_name
from .config import EvalConfig, from_dict, merge, read_yaml, to_dict
from .suite import BOUND_METRICS

PROTOCOL_VERSION = 1
DEFAULTS_DIR = "defaults"
FINGERPRINT_LENGTH = 12
# fields of EvalConfig that never change a number (see the module docstring); dataset and split move into "data"
NOT_IN_PROTOCOL = ("data_dir", "dataset", "split", "examples")  # examples: saliency maps kept for the report
# suite metrics that read ifia.eps: the bounds
EPS_METRICS = BOUND_METRICS
_FLAGS = {"eps": "--eps", "step_size": "--step-size", "k": "--k"}


def config_dir() -> Path:
    """Directory of the YAML presets: ``$ATTROBUST_CONFIGS`` when set; else the presets installed inside the
    package (``attrobust/configs``: ``pip install .`` ships the repository's ``configs/`` there, see
    ``setup.py``); else the source checkout's ``configs/`` (running from ``src/`` or an editable install)."""
    env = os.environ.get("ATTROBUST_CONFIGS")
    if env:
        candidates = [Path(env)]
    else:
        installed = importlib.resources.files("attrobust") / "configs"
        # a package imported from a zip archive has no directory of presets to glob: the checkout is the fallback
        candidates = [installed] if isinstance(installed, Path) else []
        candidates.append(Path(__file__).resolve().parents[3] / "configs")
    for path in candidates:
        if path.is_dir():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise ValueError(
        f"preset directory not found: expected the configs/*.yaml presets in {tried}; reinstall attrobust "
        "(pip install . ships them inside the package) or set ATTROBUST_CONFIGS to the directory holding them"
    )


def defaults_file(dataset: str | None) -> Path | None:
    """``configs/defaults/<dataset>.yaml`` when it exists, else None (no paper protocol for this data); any
    spelling of a registered name finds its file (``fashion-mnist``: ``fashion_mnist.yaml``)."""
    if not dataset or any(c in dataset for c in "/\\") or dataset.startswith("."):
        return None
    dataset = canonical_name(dataset)
    path = config_dir() / DEFAULTS_DIR / f"{dataset}.yaml"
    return path if path.is_file() else None


def eval_defaults(dataset: str | None) -> EvalConfig:
    """The evaluation protocol of ``dataset``'s paper preset (:func:`defaults_file`), else ``EvalConfig()``,
    which has no budget: ``eps``, ``step_size`` and ``k`` must then be given (see :func:`check_budget`)."""
    path = defaults_file(dataset)
    if path is None:
        return EvalConfig()
    try:
        return merge(EvalConfig(), read_yaml(path))
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def check_budget(config: EvalConfig, dataset: str | None, metric_names: Sequence[str] = ()) -> None:
    """Raise ``ValueError`` naming the flags and config keys when a budget the evaluation needs is unset.

    PGD needs ``pgd.eps`` and ``pgd.step_size``; IFIA ``ifia.eps``, ``ifia.step_size`` and ``ifia.k``; the bound
    metrics (``metric_names``, ``"all"`` included) ``ifia.eps``. Attacks that are skipped need nothing.
    """
    needed = []
    if not config.skip_pgd:
        needed += [("pgd", key) for key in ("eps", "step_size")]
    if not config.skip_ifia:
        needed += [("ifia", key) for key in ("eps", "step_size", "k")]
    elif any(m in EPS_METRICS or m == "all" for m in metric_names):
        needed.append(("ifia", "eps"))
    missing = [(section, key) for section, key in needed if getattr(getattr(config, section), key) is None]
    if not missing:
        return
    keys = ", ".join(f"{s}.{k}" for s, k in missing)
    flags = ", ".join(dict.fromkeys(_FLAGS[k] for _, k in missing))
    why = (
        f"dataset {dataset!r} has no evaluation preset (configs/{DEFAULTS_DIR}/{dataset}.yaml)"
        if dataset and defaults_file(dataset) is None
        else "no evaluation preset applies to this data" if not dataset
        else f"the preset of dataset {dataset!r} states no value for them"
    )
    raise ValueError(
        f"no default budget: {why}, so give {keys} (on the command line {flags}, or --set KEY=VALUE / --config "
        f"FILE; --eps and --step-size set PGD and IFIA alike)"
    )


def data_identity(config: EvalConfig, train_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Which data an evaluation loads: ``{"name", "split", "kwargs"}``, ``kwargs`` being the loader options of
    the checkpoint's training data (``train_data``, its ``data`` section) when the evaluation uses the same
    dataset. (A dataset handed to ``evaluate`` as an object is identified by its name, split and size.)"""
    train_data = train_data or {}
    name = config.dataset or train_data.get("name")
    same = name == train_data.get("name")
    return {"name": name, "split": config.split, "kwargs": dict(train_data.get("kwargs") or {}) if same else {}}


def device_type(device: str) -> str:
    """``"cuda:1"`` -> ``"cuda"``; a string torch does not parse is kept as it is."""
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError):
        return str(device)


def describe(config: EvalConfig, data: Mapping[str, Any]) -> dict[str, Any]:
    """The protocol of an evaluation: every setting of ``config`` that can change a number (see the module
    docstring) and ``data`` (:func:`data_identity`), as plain JSON types. An evaluation whose
    ``ifia.attribution`` is an object (a Captum method, a callable) has no protocol: ``ValueError``."""
    if not isinstance(config.ifia.attribution, str):
        raise ValueError(
            "ifia.attribution: expected the name of a registered attribution in an evaluation (its protocol is "
            f"stored and names its method), got a {type(config.ifia.attribution).__name__}; a Captum method or a "
            "callable is measured with the metrics' explain= (attrobust.metrics) or attrobust.attributions.explainer"
        )
    cfg = {k: v for k, v in to_dict(config).items() if k not in NOT_IN_PROTOCOL}
    cfg["device"] = device_type(config.device)
    if config.skip_pgd:
        del cfg["pgd"]
    if config.skip_ifia and not config.metrics:
        del cfg["ifia"]
    if config.metrics:
        cfg["metrics"] = sorted(set(config.metrics))
    else:
        del cfg["metrics"], cfg["suite"]
    return {"version": PROTOCOL_VERSION, "data": json.loads(json.dumps(dict(data))), **cfg}


def fingerprint(protocol: Mapping[str, Any]) -> str:
    """Short hex sha256 of the canonical JSON of ``protocol`` (sorted keys, no spaces): equal protocols give
    equal fingerprints in every process and on every machine."""
    text = json.dumps(protocol, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:FINGERPRINT_LENGTH]


def of_results(results: Mapping[str, Any]) -> tuple[dict[str, Any], str] | None:
    """``(protocol, fingerprint)`` of a stored result: the stored ones, else (results written before
    fingerprints) recomputed from its ``eval_config``, ``train_config`` and ``dataset``; None if unreadable."""
    stored, fp = results.get("protocol"), results.get("protocol_fingerprint")
    if isinstance(stored, Mapping) and isinstance(fp, str):
        return dict(stored), fp
    try:
        config = from_dict(EvalConfig, dict(results.get("eval_config") or {}))
    except (ValueError, TypeError):
        return None
    train = results.get("train_config") or {}
    data = data_identity(config, train.get("data") if isinstance(train, Mapping) else None)
    dataset = results.get("dataset") or {}
    if isinstance(dataset, Mapping) and dataset.get("name"):
        data["name"] = dataset["name"]
    protocol = describe(config, data)
    return protocol, fingerprint(protocol)


def _stored_fingerprint(path: Path) -> str | None:
    try:
        found = of_results(json.loads(path.read_text()))
    except (OSError, ValueError, AttributeError):
        return None
    return None if found is None else found[1]


def results_path(path: str | Path, fp: str) -> Path:
    """Where results of protocol ``fp`` asked to go to ``path`` are written: ``path`` when it is free or holds
    results of the same protocol, else ``<stem>-<fp><suffix>`` beside it (results of another protocol are never
    overwritten)."""
    path = Path(path)
    if not path.exists() or _stored_fingerprint(path) == fp:
        return path
    other = path.with_name(f"{path.stem}-{fp}{path.suffix}")
    if other.exists() and _stored_fingerprint(other) != fp:
        raise ValueError(f"out: {path} and {other} both hold results of other protocols; choose another --out")
    return other


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _runs(ifia: Mapping[str, Any]) -> str:
    n, random_start = ifia.get("restarts"), ifia.get("random_start")
    if random_start:
        start = "each from a random point of the eps ball"
    elif n and n > 1 and ifia.get("restart_from") == "clean":
        start = "each from the clean image"
    elif n and n > 1:
        start = "the first from the clean image, the others from random points of the eps ball"
    else:
        start = "from the clean image"
    return f"{n} run{'s' if n != 1 else ''} ({start}), the worst by {ifia.get('select_by')} kept"


def _eval_k(ifia: Mapping[str, Any]) -> str:
    """`` (top-E intersection reported)`` when the reported top-k differs from the attack's k, else ``""``."""
    eval_k = ifia.get("eval_k")
    return "" if eval_k is None or eval_k == ifia.get("k") else f" (top-{eval_k} intersection reported)"


def _ig_points(ifia: Mapping[str, Any]) -> str:
    """``"<n> IG points, "`` when the attacked attribution is integrated gradients, else ``""``: the IG points
    (``ig_steps``) reach no other method (:func:`attrobust.attributions.explainer`); the field stays in the
    protocol, so the fingerprint does not depend on the method's name."""
    from ..attributions import get_attribution, integrated_gradients

    try:
        uses_ig = get_attribution(str(ifia.get("attribution"))) is integrated_gradients
    except ValueError:  # not a registered name (e.g. a callable's): say it rather than guess
        uses_ig = True
    return f"{ifia.get('ig_steps')} IG points, " if uses_ig else ""


def lines(protocol: Mapping[str, Any], fp: str | None = None) -> list[str]:
    """A few human-readable lines stating ``protocol`` (attack, eps, steps, step size, k, IG points, surrogate
    beta, restarts and their start, sample selection, n); the first names the fingerprint ``fp`` when given."""
    data = protocol.get("data") or {}
    n = protocol.get("n")
    if n is None:
        chosen = "all samples"
    else:
        chosen = {"first": f"the first {n} samples", "seeded_correct": f"{n} correctly classified samples drawn with "
                  "the seed"}.get(protocol.get("sample"), f"{n} samples drawn with the seed")  # fmt: skip
    head = f"protocol {fp}: " if fp else "protocol: "
    out = [
        f"{head}{data.get('name')} {data.get('split')}, {chosen}, seed {protocol.get('seed')}, batches of "
        f"{protocol.get('batch_size')}, {protocol.get('device')}"
    ]
    if (p := protocol.get("pgd")) is not None:
        start = "random start" if p.get("random_start") else "no random start"
        out.append(f"PGD l_inf (CE): eps {_fmt(p.get('eps'))}, {p.get('steps')} steps of {_fmt(p.get('step_size'))}, "
                   f"{start}")  # fmt: skip
    if (i := protocol.get("ifia")) is not None:
        beta = "none (the model itself)" if i.get("beta") is None else _fmt(i.get("beta"))
        skipped = protocol.get("skip_ifia")
        what = "IFIA settings of the metrics (IFIA skipped)" if skipped else "IFIA"
        out.append(
            f"{what} {i.get('dissimilarity')} on {i.get('attribution')}: k {i.get('k')}{_eval_k(i)}, "
            f"eps {_fmt(i.get('eps'))}, "
            f"{i.get('steps')} steps of {_fmt(i.get('step_size'))}, {_ig_points(i)}surrogate "
            f"softplus beta {beta}, {_runs(i)}" + ("" if skipped else "; correctly classified samples only")
        )
    if protocol.get("metrics"):
        out.append(f"metrics: {', '.join(protocol['metrics'])}")
    return out


def summary(protocol: Mapping[str, Any], fp: str | None = None) -> str:
    """:func:`lines` joined into one line."""
    return "; ".join(lines(protocol, fp))


def group(named: Mapping[str, Mapping[str, Any]]) -> list[tuple[str | None, dict[str, Any] | None, list[str]]]:
    """Names of evaluation results grouped by protocol, as ``(fingerprint, protocol, names)`` in the order the
    protocols first appear (``(None, None, names)`` for results whose protocol cannot be read)."""
    groups: dict[str | None, tuple[dict[str, Any] | None, list[str]]] = {}
    for name, results in named.items():
        found = of_results(results)
        fp, protocol = (found[1], found[0]) if found else (None, None)
        groups.setdefault(fp, (protocol, []))[1].append(name)
    return [(fp, protocol, names) for fp, (protocol, names) in groups.items()]
