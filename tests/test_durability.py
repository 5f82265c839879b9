"""Nothing is lost: atomic and durable writes, the run-directory lock, resumable evaluation (after a real SIGKILL
and after a failure), and a resumed training run's log and recorded duration."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from attrobust import _files
from attrobust.experiments import partials as partials_lib
from attrobust.experiments.config import EvalConfig, TrainConfig, from_dict, merge
from attrobust.experiments.evaluate import evaluate
from attrobust.experiments.pipeline import write_results
from attrobust.experiments.results.store import open_store
from attrobust.experiments.train import train

REPO = Path(__file__).resolve().parents[1]
evaluate_lib = importlib.import_module("attrobust.experiments.evaluate")
train_lib = importlib.import_module("attrobust.experiments.train")

# 12 samples in 6 batches of 2; the examples come from the first batches, so a resume must restore them too
EVAL = {
    "n": 12,
    "batch_size": 2,
    "examples": 3,
    "metrics": ["gini"],
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
    "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
}
# what legitimately differs between two runs of one evaluation
VOLATILE = ("timings", "created", "path", "db", "examples")


def tiny_train(tmp_path: Path, **changes: object) -> TrainConfig:
    base = {
        "name": "tiny",
        "data": {"name": "synthetic", "kwargs": {"n": 96, "size": 8, "num_classes": 3, "noise": 0.6}},
        "model": {"name": "small_cnn"},
        "optim": {"lr": 1e-2},
        "steps": 4,
        "batch_size": 16,
        "checkpoint_every": 2,
        "log_every": 1,
        "out_dir": str(tmp_path / "runs"),
    }
    return merge(from_dict(TrainConfig, base), dict(changes))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train(tiny_train(tmp_path_factory.mktemp("durable")), progress=False, db=False).model_path


def stored(results: dict) -> dict:
    return {k: v for k, v in results.items() if k not in VOLATILE}


def examples_of(results: dict) -> dict[str, np.ndarray]:
    with np.load(results["examples"]["path"], allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def assert_same_evaluation(a: dict, b: dict) -> None:
    assert json.dumps(stored(a), sort_keys=True) == json.dumps(stored(b), sort_keys=True)
    ea, eb = examples_of(a), examples_of(b)
    assert ea.keys() == eb.keys()
    for key in ea:
        np.testing.assert_array_equal(ea[key], eb[key])


# --------------------------------------------------------------------------------------------------------------
# atomic writes


def test_atomic_write_fsyncs_file_and_directory_and_uses_unique_temp_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(_files.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    target = tmp_path / "a.json"
    _files.atomic_write_text(target, "one")
    assert target.read_text() == "one" and len(synced) == 2  # the file, then its directory
    assert _files.temp_name(target) != _files.temp_name(target)
    assert os.path.dirname(_files.temp_name(target)) == str(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    target.write_text("old")

    def half(f: object) -> None:
        f.write(b"new, half written")  # type: ignore[attr-defined]
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        _files.atomic_write(target, half)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_results_to_an_existing_directory_is_refused_without_a_stray_temp(tmp_path: Path) -> None:
    out = tmp_path / "results"
    out.mkdir()
    with pytest.raises(ValueError, match="existing directory"):
        write_results({"a": 1}, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]


# --------------------------------------------------------------------------------------------------------------
# the lock


@pytest.fixture
def other_process() -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    proc.kill()
    proc.wait()


def write_lock(directory: Path, pid: int, host: str | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or _files.socket.gethostname(), "started": _files._start_time(pid)}
    (directory / _files.LOCK_NAME).write_text(json.dumps(owner))


def test_lock_refuses_a_live_owner_and_takes_over_a_dead_ones(tmp_path: Path, other_process: subprocess.Popen) -> None:
    write_lock(tmp_path, other_process.pid)
    with pytest.raises(ValueError, match=f"expected no other run.*pid {other_process.pid}.*delete"):
        _files.DirLock(tmp_path).acquire()
    other_process.kill()
    other_process.wait()
    with _files.DirLock(tmp_path) as lock:  # its owner is gone: stale, taken over
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
        with pytest.raises(ValueError, match="expected no other run"):
            _files.DirLock(tmp_path).acquire()  # held by this (live) process
    assert not (tmp_path / _files.LOCK_NAME).exists()


def test_lock_of_a_reused_pid_is_stale_and_another_hosts_lock_is_kept(tmp_path: Path) -> None:
    owner = {"pid": os.getpid(), "host": _files.socket.gethostname(), "started": "0"}  # another start time
    (tmp_path / _files.LOCK_NAME).write_text(json.dumps(owner))
    with _files.DirLock(tmp_path):
        pass
    write_lock(tmp_path, 1, host="some-other-host")
    with pytest.raises(ValueError, match="some-other-host"):
        _files.DirLock(tmp_path).acquire()


def test_a_second_concurrent_training_of_one_run_directory_is_refused(
    tmp_path: Path, other_process: subprocess.Popen
) -> None:
    cfg = tiny_train(tmp_path)
    write_lock(Path(cfg.out_dir) / cfg.name, other_process.pid)
    with pytest.raises(ValueError, match="expected no other training run"):
        train(cfg, progress=False, db=False)
    assert not (Path(cfg.out_dir) / cfg.name / "state.pt").exists()


# --------------------------------------------------------------------------------------------------------------
# resumable evaluation

KILLER = """
import os, signal, sys
from pathlib import Path
from attrobust.experiments import partials
from attrobust.experiments.config import EvalConfig, from_dict
from attrobust.experiments.evaluate import evaluate

save = partials.Partials.save
def save_then_die(self, b, part):
    save(self, b, part)
    if len(self.found()) == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
partials.Partials.save = save_then_die
evaluate(sys.argv[1], from_dict(EvalConfig, {config}), out=sys.argv[2], progress=False, db=False)
"""


def test_evaluation_killed_by_sigkill_resumes_to_identical_results(checkpoint: Path, tmp_path: Path) -> None:
    full = evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=tmp_path / "full.json", progress=False, db=False)
    out = tmp_path / "killed.json"
    script = KILLER.format(config=repr(EVAL))
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(checkpoint), str(out), "3"], env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not out.exists()
    part = partials_lib.partial_dir(out)
    assert [p.name for p in sorted(part.glob("batch-*.pt"))] == [f"batch-00000{b}.pt" for b in range(3)]
    # the killed process left its lock behind: it is stale and taken over; without --resume nothing is thrown away
    with pytest.raises(ValueError, match="--resume"):
        evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=out, progress=False, db=False)
    computed: list[int] = []
    real = evaluate_lib._evaluate_batch
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(evaluate_lib, "_evaluate_batch", lambda *a, **k: (computed.append(a[1]), real(*a, **k))[1])
        resumed = evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=out, progress=False, db=False, resume=True)
    assert computed == [3, 4, 5]  # only the batches the killed run had not finished
    assert_same_evaluation(resumed, full)
    assert json.loads(out.read_text())["per_example"] == json.loads((tmp_path / "full.json").read_text())["per_example"]
    assert not part.exists()


def test_failed_evaluation_resumes_and_other_protocols_or_checkpoints_are_refused(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    full = evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=tmp_path / "full.json", progress=False, db=False)
    out = tmp_path / "r.json"
    real = evaluate_lib._evaluate_batch

    def fail_at_4(*args: object, **kwargs: object) -> dict:
        if args[1] == 4:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate_lib, "_evaluate_batch", fail_at_4)
    with pytest.raises(RuntimeError) as failed:
        evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=out, progress=False, db=False)
    assert "continue with --resume" in failed.value.__notes__[0]
    monkeypatch.setattr(evaluate_lib, "_evaluate_batch", real)
    assert len(list(partials_lib.partial_dir(out).glob("batch-*.pt"))) == 4
    other = merge(from_dict(EvalConfig, EVAL), {"ifia": {"steps": 3}})
    with pytest.raises(ValueError, match="protocol_fingerprint"):
        evaluate(checkpoint, other, out=out, progress=False, db=False, resume=True)
    retrained = train(tiny_train(tmp_path, seed=1), progress=False, db=False).model_path
    with pytest.raises(ValueError, match="checkpoint_sha256"):
        evaluate(retrained, from_dict(EvalConfig, EVAL), out=out, progress=False, db=False, resume=True)
    meta = partials_lib.partial_dir(out) / "meta.json"
    kept = meta.read_text()  # batches of an older format lack today's columns (format 1: no flat_start)
    meta.write_text(kept.replace(partials_lib.FORMAT, "attrobust-eval-partial/1"))
    with pytest.raises(ValueError, match="format 'attrobust-eval-partial/1'"):
        evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=out, progress=False, db=False, resume=True)
    meta.write_text(kept)
    resumed = evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=out, progress=False, db=False, resume=True)
    assert_same_evaluation(resumed, full)


def test_bad_output_and_k_are_refused_before_any_attack(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("an attack ran before the input was checked")

    monkeypatch.setattr(evaluate_lib.attacks, "pgd", boom)
    monkeypatch.setattr(evaluate_lib.attacks, "ifia", boom)
    with pytest.raises(ValueError, match=r"ifia\.k: expected at most the 64 pixels of a 8x8"):
        evaluate(checkpoint, merge(from_dict(EvalConfig, EVAL), {"ifia": {"k": 10000}}), progress=False, db=False)
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ValueError, match="existing directory"):
        evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=tmp_path / "dir.json", progress=False, db=False)
    with pytest.raises(ValueError, match="out: expected a file name of at most"):
        evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=tmp_path / ("x" * 250 + ".json"), progress=False,
                 db=False)  # fmt: skip
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ValueError, match="out: expected a directory that can be created"):
        evaluate(checkpoint, from_dict(EvalConfig, EVAL), out=blocked / "r.json", progress=False, db=False)
    with pytest.raises(ValueError, match=r"device: expected a torch device.*'banana'"):
        evaluate(checkpoint, merge(from_dict(EvalConfig, EVAL), {"device": "banana"}), progress=False, db=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dir.json", "file"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")
def test_cuda_on_a_machine_without_it_is_a_clear_error(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="device: expected a device of this machine, got 'cuda'") as err:
        evaluate(checkpoint, merge(from_dict(EvalConfig, EVAL), {"device": "cuda"}), progress=False, db=False)
    assert "weights_only" not in str(err.value)
    with pytest.raises(ValueError, match="device: expected a device of this machine"):
        train(tiny_train(tmp_path, device="cuda"), progress=False, db=False)


# --------------------------------------------------------------------------------------------------------------
# resumed training: the log and the recorded duration


def test_resume_trims_the_log_back_to_the_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_train(tmp_path, steps=6)
    run_dir = Path(cfg.out_dir) / cfg.name
    train(cfg, progress=False, db=False, stop_after=2)
    at_2 = (run_dir / "state.pt").read_bytes()
    train(cfg, progress=False, db=False, resume=True, stop_after=4)  # logs steps 3 and 4
    (run_dir / "state.pt").write_bytes(at_2)  # as if killed after logging step 4, last checkpoint at step 2
    train(cfg, progress=False, db=False, resume=True)
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


class FakeClock:
    """``time`` for the trainer: every ``perf_counter`` call advances one second (durations without timing)."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        self.now += 1.0
        return self.now


def test_recorded_duration_accumulates_over_resumed_calls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train_lib, "time", FakeClock())
    cfg = tiny_train(tmp_path, steps=4, checkpoint_every=10)
    db = tmp_path / "runs.db"
    first = train(cfg, progress=False, db=db, stop_after=3)
    second = train(cfg, progress=False, db=db, resume=True)
    with open_store(db) as store:
        stopped, completed = sorted(store.runs(kind="train"), key=lambda r: r["id"])
    assert stopped["duration_s"] == first.seconds > 0
    # the second call took its own (fake) seconds on top of the first call's
    assert completed["duration_s"] == second.seconds > first.seconds
    assert torch.load(Path(cfg.out_dir) / cfg.name / "state.pt", weights_only=True)["seconds"] == second.seconds
