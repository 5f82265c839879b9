"""What an audit accepts: images at their own size, a sample covering every class, the evaluation's options on the
command line, tensors/Datasets/DataLoaders, weights from DataParallel, safetensors, and a clear refusal of a
whole pickled model; the protocol and a run-time estimate are printed first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from typer.testing import CliRunner

import test_audit
from attrobust.cli import app
from attrobust.data import ImageDataset
from attrobust.experiments import audit as audit_lib
from attrobust.experiments.audit_inputs import balanced_order, read_weights, strip_wrapper_prefixes
from attrobust.experiments.config import EvalConfig, from_dict, merge
from test_audit import FAST

user = test_audit.user  # the fixture: a user's module, and a folder of 3 classes of 8x8 images

FAST_ARGS = ["--eps", "0.1", "--step-size", "0.05", "--k", "8", "--steps", "2", "--ig-steps", "3", "--pgd-steps",
             "2", "--restarts", "1", "--beta", "5", "--batch-size", "6", "--device", "cpu"]  # fmt: skip


def write_images(folder: Path, sizes: list[tuple[int, int]], per_class: int = 3) -> None:
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "eel")):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = sizes[(c * per_class + i) % len(sizes)]
            pixels = (rng.random((h, w)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / name / f"{i}.png")


def tensors(n: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.arange(n) % 3


def test_folder_images_keep_their_size_or_the_models_declared_one(user: Path) -> None:
    ds = audit_lib.load_image_folder(user / "images", channels=1)
    assert ds.images.shape == (9, 1, 8, 8)  # the images' own size: no silent resize to 224
    write_images(user / "mixed", [(8, 8), (10, 12)])
    with pytest.raises(ValueError, match="one size"):
        audit_lib.load_image_folder(user / "mixed")
    with pytest.warns(UserWarning, match="resizing"):
        assert audit_lib.load_image_folder(user / "mixed", size=8).images.shape[-2:] == (8, 8)
    model = audit_lib.load_factory("usernet:relu_net").eval()
    model.input_size = 8  # a declared input size wins over the images' own (with a warning when it resizes)
    with pytest.warns(UserWarning, match="resizing"):
        out = audit_lib.audit(model, user / "mixed", config=from_dict(EvalConfig, FAST), out_dir=user / "a",
                              progress=False)  # fmt: skip
    assert out["results"]["summary"]["n"] == 6


def test_default_sample_is_seeded_and_covers_every_class(user: Path) -> None:
    model = audit_lib.load_factory("usernet:relu_net").eval()
    config = merge(from_dict(EvalConfig, FAST), {"n": 3, "skip_ifia": True, "skip_pgd": True})
    labels = audit_lib.audit(model, user / "images", config=config, out_dir=user / "a", progress=False)[
        "results"]["per_example"]["label"]  # fmt: skip
    assert sorted(labels) == [0, 1, 2]  # the folder is sorted by class: its first 3 are all "cat"
    first = audit_lib.audit(model, user / "images", config=config, sample="first", out_dir=user / "b",
                            progress=False)["results"]["per_example"]["label"]  # fmt: skip
    assert first == [0, 0, 0]
    y = torch.tensor([0] * 5 + [1] * 2 + [2] * 7)
    order = balanced_order(y, torch.Generator().manual_seed(0))
    assert sorted(order.tolist()) == list(range(14)) and sorted(y[order[:6]].tolist()) == [0, 0, 1, 1, 2, 2]
    again = balanced_order(y, torch.Generator().manual_seed(0))
    other = balanced_order(y, torch.Generator().manual_seed(1))
    assert torch.equal(order, again) and not torch.equal(order, other)


@pytest.mark.parametrize("kind", ["pair", "tensor_dataset", "dataloader"])
def test_audit_takes_tensors_datasets_and_dataloaders(user: Path, kind: str) -> None:
    x, y = tensors()
    data = {"pair": (x, y), "tensor_dataset": TensorDataset(x, y),
            "dataloader": DataLoader(TensorDataset(x, y), batch_size=4)}[kind]  # fmt: skip
    model = audit_lib.load_factory("usernet:relu_net").eval()
    out = audit_lib.audit(model, data, config=from_dict(EvalConfig, FAST), out_dir=user / kind, progress=False)
    assert out["results"]["summary"]["n"] == 6 and out["results"]["dataset"]["size"] == 9
    with pytest.raises(ValueError, match="with_normalization"):  # normalised images: the helper is named
        audit_lib.audit(model, ((x - 0.5) / 0.2, y), config=from_dict(EvalConfig, FAST), out_dir=user / "n",
                        progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="DataLoader"):
        audit_lib.audit(model, 42, config=from_dict(EvalConfig, FAST), out_dir=user / "n", progress=False)


def test_weights_from_data_parallel_safetensors_and_a_whole_model(user: Path) -> None:
    model = audit_lib.load_factory("usernet:relu_net")
    fresh = audit_lib.load_factory("usernet:relu_net")
    nn.init.zeros_(fresh[0].weight)
    torch.save(nn.DataParallel(model).state_dict(), user / "dp.pt")
    audit_lib.load_weights(fresh, user / "dp.pt")
    assert torch.equal(fresh[0].weight, model[0].weight)
    nn.init.zeros_(fresh[0].weight)
    save_file({f"module._orig_mod.{k}": v.contiguous() for k, v in model.state_dict().items()},
              str(user / "w.safetensors"))  # fmt: skip
    audit_lib.load_weights(fresh, user / "w.safetensors")
    assert torch.equal(fresh[0].weight, model[0].weight)
    torch.save({"model_state_dict": model.state_dict(), "epoch": 3}, user / "ckpt.pt")
    assert read_weights(user / "ckpt.pt").keys() == model.state_dict().keys()
    assert strip_wrapper_prefixes({"module.a": torch.zeros(1), "b": torch.zeros(1)}).keys() == {"module.a", "b"}
    torch.save(model, user / "whole.pt")
    with pytest.raises(ValueError, match=r"torch\.save\(model\)\?.*state_dict\(\)"):
        audit_lib.load_weights(fresh, user / "whole.pt")
    (user / "bad.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="safetensors"):
        audit_lib.load_weights(fresh, user / "bad.safetensors")


def test_audit_command_has_evaluates_options_and_prints_protocol_and_estimate(user: Path, monkeypatch) -> None:
    monkeypatch.chdir(user)
    save_file(audit_lib.load_factory("usernet:relu_net").state_dict(), str(user / "w.safetensors"))
    args = ["audit", "--model", "usernet:relu_net", "--weights", "w.safetensors", "--data", "images", "--n", "6",
            *FAST_ARGS, "--out", "out"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    protocol_at, estimate_at = result.output.find("protocol "), result.output.find("estimated run time")
    assert 0 <= estimate_at < result.output.find("html: ") and 0 <= protocol_at < result.output.find("html: ")
    assert f"x {1 + 2 + 1 * 2 * (4 * 3 + 1)} gradient passes" in result.output  # 1 + PGD + IFIA r x s x (4m + 1)
    cfg = json.loads((user / "out" / "results.json").read_text())["eval_config"]
    assert (cfg["ifia"]["steps"], cfg["ifia"]["ig_steps"], cfg["ifia"]["restarts"], cfg["ifia"]["beta"]) == (2, 3, 1, 5)
    assert (cfg["pgd"]["steps"], cfg["batch_size"], cfg["device"], cfg["n"]) == (2, 6, "cpu", 6)
    bad = CliRunner().invoke(app, [*args[:-2], "--out", "o2", "--set", "sample=seeded"])
    assert bad.exit_code == 2 and "--sample" in bad.output
    bad = CliRunner().invoke(app, [*args[:-2], "--out", "o2", "--device", "tpu"])
    assert bad.exit_code == 2 and "device" in bad.output


def test_relu_model_keeps_the_protocols_beta_and_null_becomes_ten(user: Path) -> None:
    model = audit_lib.load_factory("usernet:relu_net").eval()
    stated = from_dict(EvalConfig, {**FAST, "ifia": {k: v for k, v in FAST["ifia"].items() if k != "beta"}})
    out = audit_lib.audit(model, tensors(), config=stated, out_dir=user / "a", progress=False)
    assert out["results"]["eval_config"]["ifia"]["beta"] == EvalConfig().ifia.beta  # as `evaluate` would run it
    null = merge(stated, {"ifia": {"beta": None}})
    out = audit_lib.audit(model, tensors(), config=null, out_dir=user / "b", progress=False)
    assert out["results"]["eval_config"]["ifia"]["beta"] == audit_lib.SURROGATE_BETA


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_cuda_is_refused_without_cuda_and_auto_falls_back(user: Path) -> None:
    model = audit_lib.load_factory("usernet:relu_net").eval()
    with pytest.raises(ValueError, match="without CUDA"):
        audit_lib.audit(model, tensors(), config=from_dict(EvalConfig, FAST), device="cuda", out_dir=user / "c",
                        progress=False)  # fmt: skip
    out = audit_lib.audit(model, tensors(), config=from_dict(EvalConfig, FAST), device="auto", out_dir=user / "c",
                          progress=False)  # fmt: skip
    assert out["results"]["eval_config"]["device"] == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_audit_gives_the_model_back_on_its_device(user: Path) -> None:
    model = audit_lib.load_factory("usernet:relu_net").eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    out = audit_lib.audit(model, tensors(), config=from_dict(EvalConfig, FAST), device="cuda", out_dir=user / "g",
                          progress=False)  # fmt: skip
    assert out["results"]["eval_config"]["device"] == "cuda" and out["results"]["protocol"]["device"] == "cuda"
    assert all(v.device.type == "cpu" and torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_an_image_dataset_gets_the_preset_of_its_name(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str | None] = []
    monkeypatch.setattr(audit_lib, "eval_defaults", lambda name: asked.append(name) or from_dict(EvalConfig, FAST))
    x, y = tensors()
    model = audit_lib.load_factory("usernet:relu_net").eval()
    audit_lib.audit(model, ImageDataset(x, y, ("a", "b", "c"), "mnist"), out_dir=user / "m", progress=False)
    audit_lib.audit(model, (x, y), out_dir=user / "t", progress=False)
    assert asked == ["mnist", None]  # tensors have no paper protocol
