"""Saliency-map examples of an evaluation: computed while it runs, stored beside its results.

The report's qualitative figure (clean image | its map | IFIA-perturbed image | its map) is drawn from what the
evaluation itself computed, never from a second attack: for the first ``EvalConfig.examples`` correctly
classified samples that IFIA attacked (in the order of the evaluated samples), the clean image, the perturbation
the evaluation selected (its own ``x_adv``), the saliency maps of both (the evaluation's attribution with its IG
points, :func:`attrobust.metrics.saliency_map` reshaped to ``(H, W)``), the per-example top-k intersection,
Kendall tau and validity of the evaluation, the dataset index, the label and the class name.

- :func:`of_batch` turns one evaluation batch into example columns (numpy); :func:`wanted` tells the evaluation
  whether a batch still has to compute them; :func:`merge` keeps the first ``n`` in batch order. A process
  skips a batch only when its own earlier batches already hold ``n`` examples, and every batch computes the same
  rows, so a run under torchrun (batches dealt to the processes, merged on rank 0) stores exactly the examples
  of a single-process run.
- :func:`save` writes them beside the results file as ``<results stem>.examples.npz`` (plain numpy arrays, no
  pickle: images of a 224x224x3 dataset would bloat the JSON) and returns the reference the results store:
  ``{"file", "path", "sha256", "count"}``. The name follows the results file, so two results files of one
  protocol in one folder keep their own examples.
- :func:`load` reads them back for the report (``allow_pickle=False``, sha256 checked): it loads no model, no
  dataset and runs no attack.

Imports: the attribution registry, :func:`~attrobust.metrics.saliency_map`, the datasets' fixed class names and
the config; nothing of the rest of the pipeline. Images follow the package contract: float ``(n, C, H, W)`` in [0, 1].
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import data as data_lib
from .._files import atomic_write
from ..attributions import explainer
from ..metrics import saliency_map
from .config import EvalConfig

# the per-example arrays of a stored examples file and their number of dimensions
_ARRAYS = {"images": 4, "adv_images": 4, "maps": 3, "adv_maps": 3, "topk": 1, "kendall": 1, "valid": 1, "index": 1,
           "label": 1}  # fmt: skip


@dataclass
class SaliencyExamples:
    """Clean and IFIA-perturbed examples of one evaluation as numpy arrays.

    ``images``/``adv_images`` float ``(n, C, H, W)`` in [0, 1]; ``maps``/``adv_maps`` ``(n, H, W)``: saliency maps
    (|attribution| summed over channels) on the clean and perturbed inputs; ``topk``/``kendall`` ``(n,)`` between
    them as the evaluation measured them (1.0 where no step kept the label); ``valid`` ``(n,)`` bool;
    ``indices``/``labels`` ``(n,)`` int: dataset indices and true labels; ``k``: the top-k size; ``attribution``:
    the method's name; ``classes`` ``(n,)`` str: the labels' class names (None when not stored).
    """

    images: np.ndarray
    maps: np.ndarray
    adv_images: np.ndarray
    adv_maps: np.ndarray
    topk: np.ndarray
    kendall: np.ndarray
    valid: np.ndarray
    indices: np.ndarray
    labels: np.ndarray
    k: int
    attribution: str
    classes: np.ndarray | None = None

    def head(self, n: int) -> SaliencyExamples:
        """The first ``n`` examples."""
        rows = {f: getattr(self, f)[:n] for f in ("images", "maps", "adv_images", "adv_maps", "topk", "kendall",
                                                   "valid", "indices", "labels")}  # fmt: skip
        return replace(self, **rows, classes=None if self.classes is None else self.classes[:n])


# --------------------------------------------------------------------------------------------------------------
# at evaluation time


def _attribution(config: EvalConfig, device: torch.device, seed: int) -> Callable[..., torch.Tensor]:
    """The evaluation's attribution (its IG points); a random method draws from a generator seeded with ``seed``,
    so the global random state is left untouched (the evaluation's numbers do not depend on the examples)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return explainer(config.ifia.attribution, ig_steps=config.ifia.ig_steps, generator=generator)


def wanted(parts: Iterable[Mapping[str, Any]], config: EvalConfig) -> bool:
    """Whether the next batch must compute examples: IFIA runs and the earlier batches ``parts`` (this process's
    per-batch outputs, each maybe with an ``"examples"`` entry) hold fewer than ``config.examples``."""
    if config.skip_ifia or config.examples <= 0:
        return False
    found = sum(len(p["examples"]["local"]) for p in parts if p.get("examples") is not None)
    return found < config.examples


def of_batch(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    columns: Mapping[str, Sequence[Any]],
    config: EvalConfig,
    *,
    seed: int,
) -> dict[str, np.ndarray] | None:
    """Example columns of the first ``config.examples`` attacked samples of an evaluation batch.

    ``x``/``x_adv`` float ``(M, C, H, W)``: the attacked (correctly classified) samples and the perturbation
    IFIA selected for each; ``y`` int64 ``(M,)``; ``columns``: the batch's IFIA columns (``local`` positions in
    the batch, ``topk``, ``kendall``, ``valid``, each ``(M,)``). Returns numpy arrays (``local``, ``label``,
    ``images``, ``adv_images``, ``maps``, ``adv_maps``, ``topk``, ``kendall``, ``valid``), or None when nothing
    was attacked. ``seed`` seeds a random attribution method (the evaluation derives it from its seed and the
    batch), so a batch gives the same rows whichever process runs it.
    """
    m = min(config.examples, len(y))
    if m <= 0:
        return None
    x, x_adv, y = x[:m], x_adv[:m].detach(), y[:m]
    attr = _attribution(config, x.device, seed)
    h, w = x.shape[-2:]
    maps = [saliency_map(attr(model, t, y)).detach().reshape(-1, h, w).float().cpu().numpy() for t in (x, x_adv)]
    return {
        "local": np.asarray(columns["local"][:m], dtype=np.int64),
        "label": y.cpu().numpy().astype(np.int64),
        "images": x.detach().float().cpu().numpy(),
        "adv_images": x_adv.float().cpu().numpy(),
        "maps": maps[0],
        "adv_maps": maps[1],
        "topk": np.asarray(columns["topk"][:m], dtype=np.float64),
        "kendall": np.asarray(columns["kendall"][:m], dtype=np.float64),
        "valid": np.asarray(columns["valid"][:m], dtype=bool),
    }


def merge(
    parts: Sequence[tuple[Mapping[str, np.ndarray] | None, torch.Tensor]], n: int
) -> dict[str, np.ndarray] | None:
    """The first ``n`` examples over the batches in batch order: ``parts`` is ``(columns of :func:`of_batch` or
    None, dataset indices (B,) of the batch)`` per batch; ``local`` becomes the dataset ``index``."""
    found = [dict(cols, index=indices.numpy()[cols["local"]]) for cols, indices in parts if cols is not None]
    if not found or n <= 0:
        return None
    keys = [k for k in found[0] if k != "local"]
    return {k: np.concatenate([f[k] for f in found])[:n] for k in keys}


def save(
    examples: Mapping[str, np.ndarray] | None, results_path: str | Path, config: EvalConfig, classes: Sequence[str]
) -> dict[str, Any] | None:
    """Write ``examples`` (of :func:`merge`) to ``<results stem>.examples.npz`` beside ``results_path`` with the
    attribution's name, ``k`` and the labels' class names (``classes[label]``); returns the reference to store in
    the results, ``{"file", "path", "sha256", "count"}``, or None when there are no examples."""
    if examples is None:
        return None
    results_path = Path(results_path)
    path = results_path.with_name(f"{results_path.stem}.examples.npz")
    names = [classes[int(label)] if 0 <= int(label) < len(classes) else str(int(label)) for label in examples["label"]]
    arrays = {**examples, "class_names": np.array(names, dtype=str), "attribution": np.array(config.ifia.attribution),
              "k": np.array(int(config.ifia.reported_k), dtype=np.int64)}  # fmt: skip
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return {"file": path.name, "path": str(path), "sha256": _sha256(path), "count": len(examples["label"])}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------------------
# for the report


def _located(results: Mapping[str, Any], ref: Mapping[str, Any]) -> Path:
    """The examples file: beside the results file when its path is known, else where it was written."""
    candidates = []
    if isinstance(results.get("path"), str) and isinstance(ref.get("file"), str) and Path(ref["file"]).name:
        candidates.append(Path(results["path"]).parent / Path(ref["file"]).name)
    if isinstance(ref.get("path"), str):
        candidates.append(Path(ref["path"]))
    for path in candidates:
        if path.is_file():
            return path
    where = " or ".join(map(str, candidates)) or "nowhere (the reference names no file)"
    raise FileNotFoundError(f"stored examples not found: looked at {where}")


def load(results: Mapping[str, Any]) -> SaliencyExamples | None:
    """The examples stored with ``results`` (a results dict; its ``path``, when known, locates the file), or
    None when the results reference none; a file without class names gets those of the results' dataset when
    they are fixed (:func:`known_classes`). Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for
    a file that is not the recorded one (sha256) or not an examples file."""
    ref = results.get("examples")
    if not isinstance(ref, Mapping):
        return None
    path = _located(results, ref)
    if isinstance(ref.get("sha256"), str) and _sha256(path) != ref["sha256"]:
        recorded = ref["sha256"][:12]
        raise ValueError(f"{path}: expected the examples file recorded in the results (sha256 {recorded}...), got "
                         "another file")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {key: f[key] for key in f.files}
    except (OSError, ValueError, EOFError) as err:
        raise ValueError(f"{path}: expected a numpy .npz examples file ({err})") from None
    return _looked_up(_examples(arrays, path), results)


# class names of the datasets whose names are fixed (the others read theirs from the data directory)
KNOWN_CLASSES: dict[str, tuple[str, ...]] = {
    "mnist": data_lib.MNIST_CLASSES, "fashion_mnist": data_lib.FASHION_MNIST_CLASSES,
    "cifar10": data_lib.CIFAR10_CLASSES, "svhn": data_lib.SVHN_CLASSES, "gtsrb": data_lib.GTSRB_CLASSES,
    "flower17": data_lib.FLOWER17_CLASSES, "imagenette": data_lib.IMAGENETTE_CLASSES,
}  # fmt: skip


def known_classes(results: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The class names of the dataset ``results["dataset"]["name"]`` when that dataset's names are fixed, else
    None."""
    dataset = results.get("dataset")
    name = dataset.get("name") if isinstance(dataset, Mapping) else None
    return KNOWN_CLASSES.get(name.replace("-", "_").lower()) if isinstance(name, str) else None


def _looked_up(ex: SaliencyExamples, results: Mapping[str, Any]) -> SaliencyExamples:
    """``ex`` with the class names of its labels looked up (:func:`known_classes`) when the file stores none."""
    names = known_classes(results)
    if ex.classes is not None or names is None or not all(0 <= int(label) < len(names) for label in ex.labels):
        return ex
    return replace(ex, classes=np.array([names[int(label)] for label in ex.labels], dtype=str))


def _examples(arrays: dict[str, np.ndarray], path: Path) -> SaliencyExamples:
    missing = [key for key in (*_ARRAYS, "attribution", "k") if key not in arrays]
    bad = [key for key, ndim in _ARRAYS.items() if key in arrays and arrays[key].ndim != ndim]
    n = len(arrays["topk"]) if "topk" in arrays else 0
    uneven = [key for key in _ARRAYS if key in arrays and arrays[key].ndim and len(arrays[key]) != n]
    if missing or bad or uneven:
        raise ValueError(f"{path}: expected an examples file with {', '.join(_ARRAYS)} of {n} rows; missing "
                         f"{missing or 'none'}, wrong shape {bad + uneven or 'none'}")  # fmt: skip
    classes = arrays.get("class_names")
    return SaliencyExamples(
        images=arrays["images"], maps=arrays["maps"], adv_images=arrays["adv_images"], adv_maps=arrays["adv_maps"],
        topk=arrays["topk"], kendall=arrays["kendall"], valid=arrays["valid"].astype(bool), indices=arrays["index"],
        labels=arrays["label"], k=int(arrays["k"]), attribution=str(arrays["attribution"]),
        classes=classes if classes is not None and classes.shape == (n,) else None,
    )  # fmt: skip
