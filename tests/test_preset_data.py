"""The data sections of the GTSRB and Flower-17 presets (ART Table 1; RAR appendix C.1.3 and C.1.4): the training
set balanced by augmentation to the papers' count per class, Flower-17's seeded 72/8-per-class split, and the
``data.balance_by_augmentation`` key on tiny on-disk fixtures in the datasets' own formats."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from attrobust.experiments.config import DataConfig, TrainConfig, load_yaml
from attrobust.experiments.train import load_train_data

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _save(path: Path, seed: int, size: tuple[int, int] = (20, 24)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG" if path.suffix == ".jpg" else None)


def _write_gtsrb(root: Path, counts: dict[int, int]) -> None:
    """The official GTSRB layout with ``counts[class]`` training images per class and one test image."""
    header = "Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"
    for cls, count in counts.items():
        folder = root / "GTSRB" / "Final_Training" / "Images" / f"{cls:05d}"
        rows = [header]
        for j in range(count):
            _save(folder / f"00000_{j:05d}.ppm", 100 * cls + j)
            rows.append(f"00000_{j:05d}.ppm;24;20;0;0;23;19;{cls}")
        (folder / f"GT-{cls:05d}.csv").write_text("\n".join(rows) + "\n")
    _save(root / "GTSRB" / "Final_Test" / "Images" / "00000.ppm", 999)
    (root / "GTSRB" / "GT-final_test.csv").write_text(f"{header}\n00000.ppm;24;20;0;0;23;19;0\n")


def _write_flowers(root: Path, classes: int, per_class: int) -> None:
    """Flower-17's jpg folder: image_NNNN.jpg, 80 consecutive numbers per class (the first ``per_class`` here)."""
    for cls in range(classes):
        for j in range(per_class):
            _save(root / "flower17" / "jpg" / f"image_{80 * cls + j + 1:04d}.jpg", 10 * cls + j)


def _counts(labels: torch.Tensor) -> dict[int, int]:
    return {int(k): int(v) for k, v in zip(*torch.unique(labels, return_counts=True), strict=True)}


def test_the_presets_balance_gtsrb_and_flower_as_the_papers() -> None:
    # ART appendix A.3 (GTSRB): "extend the training set to 10,000 images per class as in [13]"; RAR appendix
    # C.1.3: "until each class contained 10,000 training examples" (430,000 in all)
    for model in ("natural", "pgd_at", "ig_norm", "ig_sum_norm", "art"):
        assert load_yaml(TrainConfig, CONFIGS / "art_table1_gtsrb" / f"{model}.yaml").data.balance_by_augmentation == {
            "per_class": 10_000}  # fmt: skip
        # ART appendix A.3 (Flower): "72 images per class" / "8 images per class", "each class contains 1,000
        # training examples"; RAR appendix C.1.4: "We randomly split the dataset into training and test sets"
        flower = load_yaml(TrainConfig, CONFIGS / "art_table1_flower" / f"{model}.yaml").data
        assert flower.balance_by_augmentation == {"per_class": 1000}
        assert {k: flower.kwargs[k] for k in ("split_set", "test_per_class", "size")} == {
            "split_set": "random", "test_per_class": 8, "size": 128}  # fmt: skip
    # the CPU variants keep the split and shrink (Flower) or drop (GTSRB) the augmentation
    assert load_yaml(TrainConfig, CONFIGS / "art_table1_gtsrb" / "art_cpu.yaml").data.balance_by_augmentation is None
    flower_cpu = load_yaml(TrainConfig, CONFIGS / "art_table1_flower" / "art_cpu.yaml").data
    assert flower_cpu.balance_by_augmentation == {"per_class": 100} and flower_cpu.kwargs["split_set"] == "random"
    assert load_yaml(TrainConfig, CONFIGS / "art_table1_svhn" / "art.yaml").data.balance_by_augmentation is None


def test_gtsrb_preset_balances_a_tiny_training_set(tmp_path: Path) -> None:
    _write_gtsrb(tmp_path, {0: 1, 1: 2, 2: 3})
    overrides = [f"data.data_dir={tmp_path}", "data.balance_by_augmentation.per_class=5"]
    cfg = load_yaml(TrainConfig, CONFIGS / "art_table1_gtsrb" / "natural.yaml", overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 40 of GTSRB's 43 classes have no image here (said once)
        train = load_train_data(cfg)
        again = load_train_data(cfg)
    assert _counts(train.labels) == {0: 5, 1: 5, 2: 5}
    assert train.images.shape == (15, 3, 32, 32) and torch.equal(train.images, again.images)
    raw = load_train_data(load_yaml(TrainConfig, CONFIGS / "art_table1_gtsrb" / "natural_cpu.yaml", overrides[:1]))
    assert _counts(raw.labels) == {0: 1, 1: 2, 2: 3}
    torch.testing.assert_close(train.images[:6], raw.images, rtol=0, atol=0)  # the originals come first
    other_seed = load_yaml(TrainConfig, CONFIGS / "art_table1_gtsrb" / "natural.yaml", [*overrides, "seed=1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not torch.equal(load_train_data(other_seed).images, train.images)
    assert len(load_train_data(cfg, "test")) == 1  # the test split is never augmented


def test_flower_preset_splits_per_class_with_a_seed_and_balances(tmp_path: Path) -> None:
    _write_flowers(tmp_path, classes=17, per_class=4)
    size = "data.kwargs={size: 8, split_set: random, test_per_class: 1, seed: %d}"
    overrides = [f"data.data_dir={tmp_path}", "data.balance_by_augmentation.per_class=6", size % 0]
    cfg = load_yaml(TrainConfig, CONFIGS / "art_table1_flower" / "natural.yaml", overrides)
    train, test = load_train_data(cfg), load_train_data(cfg, "test")
    assert _counts(train.labels) == dict.fromkeys(range(17), 6)  # 3 originals + 3 augmented copies per class
    assert _counts(test.labels) == dict.fromkeys(range(17), 1)  # test_per_class of every class
    originals = train.images[:51]
    assert not any(bool((originals - image).abs().amax((1, 2, 3)).min() == 0) for image in test.images)
    assert torch.equal(load_train_data(cfg, "test").images, test.images)  # seeded
    tests = {load_train_data(load_yaml(TrainConfig, CONFIGS / "art_table1_flower" / "natural.yaml",
                                       [*overrides[:2], size % s]), "test").images.sum().item() for s in range(4)}
    assert len(tests) > 1  # another seed, another split


def test_balance_key_is_checked() -> None:
    for bad, match in (({"rotation": 5}, "per_class: expected an integer"), ({"per_class": 0}, "per_class"),
                       ({"per_class": 3, "scale": 2}, "unknown scale"), (7, "expected a mapping")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            DataConfig(name="gtsrb", balance_by_augmentation=bad)
