"""Evaluation as in the papers' tables: natural accuracy, PGD accuracy, and IFIA top-k intersection / Kendall.

Protocol (DESIGN.md, RAR paper appendix C.1): take ``n`` test samples (the first n, or a seeded sample);
natural accuracy and PGD accuracy (l_inf, random start, CE) are measured on all of them; the attribution attack
(IFIA, top-k dissimilarity) runs on the correctly classified ones only. A sample for which no attack step keeps
the label has "no valid perturbation": it counts as similarity 1 in the table figure (what the papers' code did)
and is also reported separately, with the mean over the valid samples only.

Before the work, the evaluation checks that its budget is set (a dataset without a paper preset has none), prints
its protocol and fingerprint (:mod:`.protocol`) and picks a results file that holds no other protocol's results;
both are stored in the results. The attacks are seeded per batch, so ``batch_size`` is part of the protocol.

The work ends here: the results dict goes to :mod:`.pipeline`, which writes the results file and records it
in the database (this module never imports the store).

Tensor contract: images float ``(N, C, H, W)`` in [0, 1], labels int64 ``(N,)``, the model returns logits
``(N, K)``; every budget is in pixel units.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import attacks
from .. import models as models_lib
from .._checks import check_logits
from ..data import ImageDataset
from . import distributed, sampling, suite
from . import examples as examples_lib
from . import protocol as protocol_lib
from .config import DataConfig, EvalConfig, to_dict
from .partials import Partials, check_output
from .pipeline import publish_evaluation
from .provenance import check_device, file_sha256
from .results.tables import TABLE_COLUMNS, format_table, table_row  # noqa: F401 - their former home (aliases)
from .seeding import derive_seed
from .summaries import json_safe, summarize

__all__ = ["evaluate", "format_table", "resolve_dataset", "select_indices", "summarize", "table_row"]

# The per-example IFIA columns of a batch (beside ``local``) and of the results (beside ``index``); ``flat_start``
# marks an image whose top-k attack started at a flat point of its objective (IFIAResult.flat_start).
IFIA_COLUMNS = ("topk", "kendall", "valid", "step", "flat_start")


def select_indices(n_total: int, config: EvalConfig) -> torch.Tensor:
    """Indices ``(n,)`` int64 of the evaluated samples: the first ``n`` or ``n`` drawn with ``config.seed``."""
    n = n_total if config.n is None else config.n
    if n > n_total:
        raise ValueError(f"n: expected at most the {n_total} samples of the split, got {n}")
    if config.sample == "first":
        return torch.arange(n)
    gen = torch.Generator().manual_seed(derive_seed(config.seed, "sample"))
    return torch.randperm(n_total, generator=gen)[:n]


def resolve_dataset(config: EvalConfig, train_config: dict[str, Any] | None) -> ImageDataset:
    """The evaluated split: ``config.dataset``, else the checkpoint's training dataset (``train_config``, its
    saved ``TrainConfig`` dict) with its loader options and, for that same dataset, its ``data_dir``."""
    data = protocol_lib.data_identity(config, (train_config or {}).get("data"))
    if not data["name"]:
        raise ValueError(
            "dataset: expected EvalConfig.dataset (or a checkpoint carrying its training config), got none"
        )
    train_data = (train_config or {}).get("data") or {}
    same = data["name"] == train_data.get("name")
    data_dir = config.data_dir or (train_data.get("data_dir") if same else None)
    return DataConfig(name=data["name"], kwargs=data["kwargs"]).load(config.split, data_dir)




def _protocol_config(
    config: EvalConfig | None, train_config: dict[str, Any] | None, dataset: ImageDataset | None
) -> tuple[EvalConfig, dict[str, Any]]:
    """The evaluation config (``config``, else the data's paper protocol) with its budget checked, and the
    identity of its data (:func:`.protocol.data_identity`; a dataset object by its name and size)."""
    train_data = (train_config or {}).get("data")
    data = protocol_lib.data_identity(config or EvalConfig(), train_data)
    if dataset is not None:
        data = {"name": dataset.name, "split": (config or EvalConfig()).split, "kwargs": {}, "size": len(dataset)}
    if config is None:
        config = protocol_lib.eval_defaults(data["name"])
    suite.check_names(list(config.metrics))
    protocol_lib.check_budget(config, data["name"], config.metrics)
    return config, data


def _announce(
    config: EvalConfig, data: dict[str, Any], out: str | Path | None, say: Callable[[str], None] | None, main: bool
) -> tuple[dict[str, Any], str, Path | None]:
    """The protocol, its fingerprint and the results file (on the main process, one that holds no other
    protocol's results); ``say`` prints the protocol and the file before the work."""
    protocol = protocol_lib.describe(config, data)
    fingerprint = protocol_lib.fingerprint(protocol)
    path = None if out is None else protocol_lib.results_path(out, fingerprint) if main else Path(out)
    if say is not None:
        say("\n  ".join(protocol_lib.lines(protocol, fingerprint)))
        if path is not None:
            say(f"results -> {path}")
    return protocol, fingerprint, path


def _batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@dataclass(frozen=True)
class _Source:
    """Where the evaluated model came from: its checkpoint file (None for an in-memory model), the training
    config saved in it and the file's sha256."""

    checkpoint: Path | None = None
    train_config: dict[str, Any] | None = None
    sha256: str | None = None


def _open_model(model_or_checkpoint: nn.Module | str | Path, device: str) -> tuple[nn.Module, _Source]:
    """The model (loaded onto ``device`` from a checkpoint, or an in-memory one with finite weights)."""
    if isinstance(model_or_checkpoint, str | Path):
        checkpoint = Path(model_or_checkpoint)
        model, info = models_lib.load(checkpoint, map_location=device)
        return model, _Source(checkpoint, info.get("config"), file_sha256(checkpoint))
    if isinstance(model_or_checkpoint, nn.Module):
        models_lib.check_finite_weights(model_or_checkpoint.state_dict(), "model")
        return model_or_checkpoint, _Source()
    raise ValueError(
        f"model_or_checkpoint: expected an nn.Module or a checkpoint path, got {type(model_or_checkpoint).__name__}"
    )


@dataclass(frozen=True)
class _Plan:
    """The evaluated samples (``idx (n,)`` into ``ds``), their batches, the batches of this process
    (round-robin), its device, and the suite metrics that run (with notes on those left out)."""

    ds: ImageDataset
    idx: torch.Tensor
    slices: list[slice]
    mine: list[int]
    ctx: distributed.Dist
    device: str
    boxes: torch.Tensor | None
    metric_names: list[str]
    metric_notes: list[str]


def _check_k(config: EvalConfig, ds: ImageDataset) -> None:
    """Raise ``ValueError`` (before any attack runs) when IFIA's ``k`` or ``eval_k`` exceeds the pixels of a map."""
    if config.skip_ifia:
        return
    h, w = ds.images.shape[-2:]
    for key, k in (("ifia.k", config.ifia.k), ("ifia.eval_k", config.ifia.eval_k)):
        if k is not None and k > h * w:
            raise ValueError(f"{key}: expected at most the {h * w} pixels of a {h}x{w} saliency map, got {k}")


def _plan(config: EvalConfig, ds: ImageDataset, model: nn.Module | None = None) -> _Plan:
    _check_k(config, ds)
    if config.sample in sampling.MODEL_DEPENDENT:  # a sample of the images this model classifies correctly
        idx = sampling.seeded_correct(model, ds, config)
    else:
        idx = select_indices(len(ds), config)
    slices = _batches(len(idx), config.batch_size)
    ctx = distributed.context(config.device)
    mine = [b for b in range(len(slices)) if b % ctx.world == ctx.rank]
    boxes = ds.boxes[idx] if getattr(ds, "boxes", None) is not None else None
    names, notes = suite.resolve(list(config.metrics), config, boxes is not None)
    return _Plan(ds, idx, slices, mine, ctx, ctx.device(config.device), boxes, names, notes)


def evaluate(
    model_or_checkpoint: nn.Module | str | Path,
    config: EvalConfig | None = None,
    *,
    dataset: ImageDataset | None = None,
    progress: bool = True,
    out: str | Path | None = None,
    db: str | Path | bool | None = None,
    echo: Callable[[str], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Evaluate a model: natural accuracy, PGD accuracy and IFIA top-k intersection / Kendall.

    Args:
        model_or_checkpoint: a classifier (float ``(N, C, H, W)`` in [0, 1] -> logits ``(N, K)``) or the path of
            a checkpoint written by ``attrobust.models.save`` (its training config picks the dataset).
        config: the evaluation (default: the dataset's paper protocol, :func:`.protocol.eval_defaults`). A
            budget (``eps``, ``step_size``, ``k``) left unset raises ``ValueError`` naming the keys and flags.
        dataset: evaluate on this dataset instead of loading ``config.dataset`` / the checkpoint's dataset.
        progress: tqdm bars per phase; also prints the protocol when ``echo`` is None.
        out: where to write the JSON results; default ``results.json`` beside a checkpoint (nothing is written
            for an in-memory model without ``out``). A file holding results of another protocol is never
            replaced: the results then go to ``<stem>-<fingerprint>.json`` beside it (see
            :func:`.protocol.results_path`).
        db: results database recording the result: a path, or None for ``$ATTROBUST_DB`` / ``attrobust.db``
            beside the checkpoint's run directory (see :mod:`.pipeline`; an in-memory model is recorded only
            into an explicit database), or False for none.
        echo: prints the protocol (and where the results go) before the work; None: ``print`` when
            ``progress``, else nothing.
        resume: continue the evaluation whose partial results lie beside ``out`` (:mod:`.partials`: every
            finished batch is kept there until the results file is written); the results are identical to an
            uninterrupted run's. Without it, partial results found there are refused (never thrown away).

    Everything is checked before any attack runs: the device, the dataset, ``k`` against the map size and the
    output location (:func:`.partials.check_output`).

    Returns a dict with ``summary`` (``n``, ``natural_acc``, ``pgd_acc``, ``topk``, ``kendall``, ``no_valid``,
    ``ifia`` statistics, among them ``flat_start``: the attacked images whose top-k attack started at a flat point
    of its objective, :func:`attrobust.attacks.ifia_flat_start`, also printed when not 0), ``per_example``
    columns, ``timings`` (seconds), the resolved ``eval_config``, its ``protocol`` and ``protocol_fingerprint``, the
    checkpoint's ``train_config``, the torch version and, when written, ``path`` (and ``db``: the database ``path``
    and ``run_id`` when recorded). The model is evaluated in eval mode; every submodule's train/eval flag is
    restored afterwards.
    """
    t_start = time.perf_counter()
    check_device(config.device if config is not None else "cpu")
    model, source = _open_model(model_or_checkpoint, config.device if config else "cpu")
    if out is None and source.checkpoint is not None:
        out = source.checkpoint.parent / "results.json"
    config, data = _protocol_config(config, source.train_config, dataset)
    check_device(config.device)
    plan = _plan(config, dataset if dataset is not None else resolve_dataset(config, source.train_config), model)
    model = model.to(plan.device)
    say = echo if echo is not None else (print if progress else None)
    if out is not None and plan.ctx.main:
        check_output(out)  # before the protocol picks the file beside it: a directory is refused, not sidestepped
    protocol, fingerprint, out = _announce(config, data, out, say if plan.ctx.main else None, plan.ctx.main)
    partial = _open_partials(out, plan, {"protocol_fingerprint": fingerprint, "checkpoint_sha256": source.sha256,
                                         "batches": len(plan.slices), "examples": config.examples}, resume)  # fmt: skip
    try:
        merged, stored = _run_batches(model, plan, config, progress, partial)
        summary, columns, more = _summarize_merged(merged, plan, config)
        if say is not None and plan.ctx.main and flat_start_line(summary):
            say(flat_start_line(summary))
        more["timings"]["total"] = time.perf_counter() - t_start
        results = _results(source, plan, config, (protocol, fingerprint), (summary, columns, more))
        if plan.ctx.active and not plan.ctx.main:
            return results
        if out is not None:
            results["examples"] = examples_lib.save(stored, out, config, plan.ds.classes)
        results = publish_evaluation(results, out, db, source.checkpoint)
    except BaseException as err:
        if partial is not None:
            partial.close()
            if partial.found():
                err.add_note(f"the finished batches are kept in {partial.dir}: continue with --resume (resume=True)")
        raise
    if partial is not None:
        partial.finish()
    return results


def flat_start_line(summary: dict[str, Any]) -> str | None:
    """The line an evaluation prints when some attacked image started IFIA's top-k attack at a flat point of its
    objective (``summary["ifia"]["flat_start"]``, :func:`attrobust.attacks.ifia_flat_start`); None otherwise."""
    stats = summary.get("ifia") or {}
    if not stats.get("flat_start"):
        return None
    return (
        f"note: {stats['flat_start']} of {stats['attacked']} attacked images started the top-k attack at a flat "
        "point (at most k non-zero pixels in the clean map): the attack moves them by rounding noise at best, so "
        "their top-k tends to stay 1 (per-example column ifia.flat_start; ifia.random_start avoids the flat point)"
    )


def _open_partials(out: Path | None, plan: _Plan, identity: dict[str, Any], resume: bool) -> Partials | None:
    """The partial results of a single-process evaluation writing ``out`` (locked, checked against ``identity``,
    see :mod:`.partials`), after checking ``out`` can be written; None without ``out`` or off the main process,
    and under ``torchrun`` (nothing is kept there)."""
    if out is None or not plan.ctx.main:
        return None
    check_output(out)
    if plan.ctx.active:
        return None
    partial = Partials(out, identity)
    partial.open(resume)
    return partial


def _results(
    source: _Source,
    plan: _Plan,
    config: EvalConfig,
    protocol: tuple[dict[str, Any], str],
    computed: tuple[dict[str, Any], dict[str, Any], dict[str, Any]],
) -> dict[str, Any]:
    """The results dict of an evaluation (JSON-safe) from its ``(protocol, fingerprint)`` and the ``(summary,
    per-example columns, {"curves", "timings"})`` of :func:`_summarize_merged`."""
    summary, columns, more = computed
    results: dict[str, Any] = {
        "checkpoint": str(source.checkpoint) if source.checkpoint is not None else None,
        "checkpoint_sha256": source.sha256,
        "dataset": {"name": plan.ds.name, "split": config.split, "size": len(plan.ds)},
        "eval_config": to_dict(config),
        "protocol": protocol[0],
        "protocol_fingerprint": protocol[1],
        "train_config": source.train_config,
        "summary": summary,
        "per_example": columns,
        **more["curves"],
        "examples": None,
        "metrics_left_out": plan.metric_notes,
        "timings": more["timings"],
        "processes": plan.ctx.world,
        "torch_version": torch.__version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    return json_safe(results)


def _run_batches(
    model: nn.Module, plan: _Plan, config: EvalConfig, progress: bool, partial: Partials | None = None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Evaluate this process's batches (in eval mode, every submodule's flag restored afterwards) and merge every
    process's columns in batch order (:func:`_merge_batches`); every process gets the merged columns, rank 0 also
    the saliency examples to store (:mod:`.examples`; None elsewhere). With ``partial``, the batches it holds
    are loaded instead of computed and every computed batch is stored there."""
    x_all, y_all = plan.ds.images[plan.idx], plan.ds.labels[plan.idx]
    parts: dict[int, dict[str, Any]] = partial.load(plan.mine) if partial is not None else {}
    size = {b: plan.slices[b].stop - plan.slices[b].start for b in plan.mine}
    bar = tqdm(total=sum(size.values()), initial=sum(size[b] for b in parts), desc="evaluate", unit="img",
               disable=not (progress and plan.ctx.main), dynamic_ncols=True)  # fmt: skip
    try:
        with attacks.model_mode(model, "eval"):
            for b in (b for b in plan.mine if b not in parts):
                xb, yb = x_all[plan.slices[b]].to(plan.device), y_all[plan.slices[b]].to(plan.device)
                boxes = None if plan.boxes is None else plan.boxes[plan.slices[b]]
                want = examples_lib.wanted(parts.values(), config)
                parts[b] = _evaluate_batch(model, b, xb, yb, config, plan.metric_names, boxes, want)
                if partial is not None:
                    partial.save(b, parts[b])
                bar.update(len(yb))
                topk = [v for part in parts.values() for v in part["ifia"]["topk"]] if not config.skip_ifia else []
                if topk:
                    bar.set_postfix(topk=f"{sum(topk) / len(topk):.3f}")
    finally:
        bar.close()
    merged = None
    every = distributed.gather(parts, plan.ctx)
    if plan.ctx.main:
        by_batch = {b: part for rank_parts in every for b, part in rank_parts.items()}
        merged = _merge_batches([by_batch[b] for b in sorted(by_batch)], plan.idx, config)
    stored = merged.pop("examples") if merged is not None else None  # rank 0 writes them
    return distributed.broadcast(merged, plan.ctx), stored


def _summarize_merged(
    merged: dict[str, Any], plan: _Plan, config: EvalConfig
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The ``summary``, the ``per_example`` columns and ``{"curves", "timings"}`` of the merged columns."""
    n = len(plan.idx)
    correct = torch.tensor(merged["natural_correct"], dtype=torch.bool)
    pgd_correct = None if merged["pgd_correct"] is None else torch.tensor(merged["pgd_correct"], dtype=torch.bool)
    ifia_cols = merged["ifia"]
    metric_summary, curves = suite.summarize(
        merged["metrics"], config, config.ifia.attribution, ifia_cols["kendall"] if ifia_cols else None
    )
    summary: dict[str, Any] = {
        "n": n,
        "natural_acc": float(correct.double().mean()) if n and config.sample not in sampling.MODEL_DEPENDENT else None,
        "pgd_acc": float(pgd_correct.double().mean()) if pgd_correct is not None and n else None,
        "topk": None,
        "kendall": None,
        "no_valid": None,
        "ifia": None,
        "metrics": metric_summary or None,
    }
    if ifia_cols is not None:
        valid = torch.tensor(ifia_cols["valid"], dtype=torch.bool)
        stats = {
            "attacked": len(ifia_cols["index"]),
            "no_valid": int((~valid).sum()),
            "flat_start": int(sum(ifia_cols["flat_start"])),
            "topk": summarize(torch.tensor(ifia_cols["topk"], dtype=torch.float64), valid),
            "kendall": summarize(torch.tensor(ifia_cols["kendall"], dtype=torch.float64), valid),
        }
        summary.update(
            topk=stats["topk"]["mean"], kendall=stats["kendall"]["mean"], no_valid=stats["no_valid"], ifia=stats
        )
    columns = {
        "index": plan.idx.tolist(),
        "label": plan.ds.labels[plan.idx].tolist(),
        "natural_correct": correct.tolist(),
        "pgd_correct": pgd_correct.tolist() if pgd_correct is not None else None,
        "ifia": ifia_cols,
        "metrics": merged["metrics"] or None,
    }
    return summary, columns, {"curves": curves, "timings": dict(merged["timings"])}


def _evaluate_batch(
    model: nn.Module,
    b: int,
    xb: torch.Tensor,
    yb: torch.Tensor,
    config: EvalConfig,
    metric_names: tuple[str, ...] | list[str] = (),
    boxes: torch.Tensor | None = None,
    examples: bool = False,
) -> dict[str, Any]:
    """Natural accuracy, PGD accuracy and IFIA (on the correctly classified) of evaluation batch ``b``.

    ``xb`` float ``(B, C, H, W)`` in [0, 1], ``yb`` int64 ``(B,)``. The attacks' random numbers come from
    generators seeded by ``(config.seed, b)``, so the batch gives the same values in whichever process runs it.
    ``metric_names`` (resolved by :func:`.suite.resolve`) adds the columns of those metrics (``boxes (B, 4)``
    for localisation); ``examples`` adds the saliency examples of :func:`.examples.of_batch`. Returns per-example
    columns (``ifia`` columns for the attacked examples only, ``local`` their positions in the batch) and the
    seconds of each phase.
    """
    device = xb.device
    timings: dict[str, float] = {}
    t = time.perf_counter()
    with torch.inference_mode():
        correct = check_logits(model(xb), yb.shape[0]).argmax(1) == yb
    timings["natural"] = time.perf_counter() - t
    out: dict[str, Any] = {"natural_correct": correct.cpu().tolist(), "pgd_correct": None, "ifia": None,
                           "metrics": {}}  # fmt: skip
    res = None
    if not config.skip_pgd:
        t = time.perf_counter()
        gen = torch.Generator(device=device).manual_seed(derive_seed(config.seed, f"pgd/{b}"))
        x_adv = attacks.pgd(
            model, xb, yb, eps=config.pgd.eps, step_size=config.pgd.step_size, steps=config.pgd.steps,
            random_start=config.pgd.random_start, generator=gen,
        )  # fmt: skip
        with torch.inference_mode():
            out["pgd_correct"] = (model(x_adv).argmax(1) == yb).cpu().tolist()
        timings["pgd"] = time.perf_counter() - t
    if not config.skip_ifia:
        t = time.perf_counter()
        keep = correct.nonzero().flatten()
        cols: dict[str, list[Any]] = {"local": keep.cpu().tolist(), **{key: [] for key in IFIA_COLUMNS}}
        if len(keep):
            cfg = config.ifia
            gen = torch.Generator(device=device).manual_seed(derive_seed(config.seed, f"ifia/{b}"))
            res = attacks.ifia(
                model, xb[keep], yb[keep],
                attribution=cfg.attribution, k=cfg.k, eps=cfg.eps, step_size=cfg.step_size, steps=cfg.steps,
                beta=cfg.beta, dissimilarity=cfg.dissimilarity, ig_steps=cfg.ig_steps, restarts=cfg.restarts,
                select_by=cfg.select_by, random_start=cfg.random_start, generator=gen, eval_k=cfg.eval_k,
                restart_from=cfg.restart_from,
            )  # fmt: skip
            cols.update(topk=res.topk.double().cpu().tolist(), kendall=res.kendall.double().cpu().tolist(),
                        valid=res.valid.cpu().tolist(), step=res.step.cpu().tolist(),
                        flat_start=res.flat_start.cpu().tolist())  # fmt: skip
            if examples:
                seed = derive_seed(config.seed, f"examples/{b}")
                out["examples"] = examples_lib.of_batch(model, xb[keep], res.x_adv, yb[keep], cols, config, seed=seed)
        out["ifia"] = cols
        timings["ifia"] = time.perf_counter() - t
    if metric_names:
        t = time.perf_counter()
        attacked = keep if not config.skip_ifia else None
        batch = suite.Batch(model=model, index=b, x=xb, y=yb, correct=correct, config=config, attacked=attacked,
                            x_adv=res.x_adv if res is not None else None, boxes=boxes)  # fmt: skip
        out["metrics"] = suite.run_batch(batch, list(metric_names))
        timings["metrics"] = time.perf_counter() - t
    out["timings"] = timings
    return out


def _merge_batches(parts: list[dict[str, Any]], idx: torch.Tensor, config: EvalConfig) -> dict[str, Any]:
    """Concatenate per-batch columns (in batch order) into the per-example columns of the whole evaluation."""
    merged: dict[str, Any] = {"natural_correct": [], "pgd_correct": None if config.skip_pgd else [], "ifia": None,
                              "metrics": {}}  # fmt: skip
    timings: dict[str, float] = {}
    if not config.skip_ifia:
        merged["ifia"] = {"index": [], **{key: [] for key in IFIA_COLUMNS}}
    offset, found = 0, []
    for part in parts:
        found.append((part.get("examples"), idx[offset : offset + len(part["natural_correct"])]))
        merged["natural_correct"] += part["natural_correct"]
        if merged["pgd_correct"] is not None:
            merged["pgd_correct"] += part["pgd_correct"]
        if merged["ifia"] is not None:
            cols = part["ifia"]
            merged["ifia"]["index"] += [int(idx[offset + i]) for i in cols["local"]]
            for key in IFIA_COLUMNS:
                merged["ifia"][key] += cols[key]
        for key, column in part["metrics"].items():
            merged["metrics"].setdefault(key, []).extend(column)
        for key, value in part["timings"].items():
            timings[key] = timings.get(key, 0.0) + value
        offset += len(part["natural_correct"])
    merged["timings"] = timings
    merged["examples"] = examples_lib.merge(found, config.examples)
    return merged
