"""The reproduction at the papers' evaluation protocol on the CPU (README, "A reproduction at the paper's
protocol"): only training is shortened; the evaluation is the paper table's own, but for the sample size."""

from __future__ import annotations

from pathlib import Path

import pytest
from torch import nn

from attrobust import models
from attrobust.experiments.config import EvalConfig, TrainConfig, load_yaml, merge_yaml, to_dict
from attrobust.experiments.protocol import eval_defaults

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
IGR = CONFIGS / "igr_table2_mnist"
RAR = CONFIGS / "rar_mnist"


def resolved_eval(path: Path) -> EvalConfig:
    """An evaluation file resolved as `attrobust evaluate --config` and `bench table` resolve it (MNIST's paper
    defaults, then the file)."""
    return merge_yaml(eval_defaults("mnist"), path)


def without_n(cfg: EvalConfig) -> dict:
    """Every setting of ``cfg`` but the sample size, as a plain dict."""
    return {key: value for key, value in to_dict(cfg).items() if key != "n"}


def test_igr_reproduction_evaluates_at_the_papers_protocol_except_n() -> None:
    paper, repro = resolved_eval(IGR / "_eval.yaml"), resolved_eval(IGR / "_eval_repro_cpu.yaml")
    assert without_n(repro) == without_n(paper)
    assert repro.n < paper.n
    # IGR paper section 6.2: "we perform 200-step IFIA as in Chen et al. (2019). For MNIST and Fashion-MNIST, we
    # choose k = 100 and the perturbation size eps = 0.3"; IFIA "using top-k intersection as dissimilarity".
    ifia = repro.ifia
    assert (ifia.steps, ifia.k, ifia.reported_k, ifia.eps, ifia.dissimilarity, ifia.attribution) == (
        200, 100, 100, 0.3, "topk", "ig")  # fmt: skip
    # section 6.3: PGD-20 at "eps = 0.3 for MNIST and Fashion-MNIST"
    assert (repro.pgd.steps, repro.pgd.eps) == (20, 0.3)


def test_rar_reproduction_is_appendix_table4_unchanged() -> None:
    # the RAR reproduction evaluates with the table's simple-gradient evaluation as it is, n included
    cfg = resolved_eval(RAR / "_eval.sg.yaml")
    assert cfg.n == 1000 and cfg.sample == resolved_eval(RAR / "_eval.yaml").sample
    # RAR section 5 and the Figure 3 caption: 200-pixel attack, top-100 intersection reported, eps 0.3, IFIA of
    # 100 steps of 0.01 run three times from the clean image; appendix Table 4 ranks simple-gradient maps
    ifia = cfg.ifia
    assert (ifia.attribution, ifia.k, ifia.reported_k, ifia.eps, ifia.steps, ifia.step_size) == (
        "saliency", 200, 100, 0.3, 100, 0.01)  # fmt: skip
    assert (ifia.restarts, ifia.restart_from) == (3, "clean")


@pytest.mark.parametrize(("folder", "architecture"), [(IGR, "cnn4"), (RAR, "mnist_cnn")])
def test_reproduction_shortens_only_training(folder: Path, architecture: str) -> None:
    paper = load_yaml(TrainConfig, folder / "natural.yaml")
    repro = load_yaml(TrainConfig, folder / "natural_repro_cpu.yaml")
    assert repro.model == paper.model and repro.model.name == architecture
    assert (repro.data, repro.objective, repro.seed, repro.batch_size) == (
        paper.data, paper.objective, paper.seed, paper.batch_size)  # fmt: skip
    steps_per_epoch = 60_000 // repro.batch_size  # MNIST's training set
    length = repro.steps if repro.steps is not None else repro.epochs * steps_per_epoch
    paper_length = paper.steps if paper.steps is not None else paper.epochs * steps_per_epoch
    assert length < paper_length
    assert "Only training is shortened" in (folder / "natural_repro_cpu.yaml").read_text()


def test_igr_architecture_is_four_conv_and_three_fc() -> None:
    # IGR paper section 6.1: "a network consisting of four convolutional layers followed by three fully
    # connected layers"
    cfg = load_yaml(TrainConfig, IGR / "natural_repro_cpu.yaml")
    net = models.create(cfg.model.name, num_classes=10, in_channels=1, input_size=28, **cfg.model.kwargs)
    kinds = [type(m) for m in net.modules()]
    assert (kinds.count(nn.Conv2d), kinds.count(nn.Linear)) == (4, 3)
