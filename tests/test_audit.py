"""Auditing a user's own model: factory import, weights-only loading, image folders, pitfall warnings, the
evaluation and the report, from Python and from the command line."""

from __future__ import annotations

import pickle
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from attrobust.cli import app
from attrobust.experiments import audit as audit_lib
from attrobust.experiments.config import EvalConfig, from_dict

USER_MODULE = textwrap.dedent('''
    import torch
    import torch.nn.functional as F
    from torch import nn


    def relu_net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))


    def prob_net():
        return nn.Sequential(relu_net(), nn.Softmax(dim=1))


    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 8 * 8, 3)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).flatten(1))


    def functional_net():
        torch.manual_seed(0)
        return Functional()


    def not_a_model():
        return 3
''')

FAST = {
    "n": 6,
    "batch_size": 6,
    "pgd": {"eps": 0.1, "step_size": 0.05, "steps": 2},
    "ifia": {"k": 8, "eps": 0.1, "step_size": 0.05, "steps": 2, "ig_steps": 3, "restarts": 1, "beta": 5.0},
}


@pytest.fixture()
def user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "usernet.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = tmp_path / "images"
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "eel")):
        (folder / name).mkdir(parents=True)
        for i in range(3):
            pixels = (rng.random((8, 8)) * 80 + 60 * c).astype(np.uint8)
            Image.fromarray(pixels, mode="L").convert("RGB").save(folder / name / f"{i}.png")
    return tmp_path


def test_audit_evaluates_and_reports_a_users_model(user: Path) -> None:
    model = audit_lib.load_factory("usernet:relu_net")
    torch.save(model.state_dict(), user / "w.pt")
    fresh = audit_lib.load_factory("usernet:relu_net")
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    audit_lib.load_weights(fresh, user / "w.pt")
    assert torch.equal(fresh[0].weight, model[0].weight)
    out = audit_lib.audit(fresh.eval(), user / "images", size=8, config=from_dict(EvalConfig, FAST),
                          out_dir=user / "audit", progress=False)  # fmt: skip
    assert out["warnings"] == []
    assert out["results"]["summary"]["n"] == 6
    assert out["results"]["dataset"]["name"] == "images (class-balanced order, seed 0)"  # the order is protocol
    html, md = out["report"]
    assert html.is_file() and md.is_file() and (user / "audit" / "results.json").is_file()


def test_image_folder_has_sorted_classes_and_the_models_channels(user: Path) -> None:
    ds = audit_lib.load_image_folder(user / "images", size=8, channels=1)
    assert ds.classes == ("cat", "dog", "eel") and ds.images.shape == (9, 1, 8, 8)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(FileNotFoundError, match="class sub-folders"):
        audit_lib.load_image_folder(user / "nope")


def test_inspection_warns_about_probabilities_train_mode_and_vanishing_curvature(user: Path) -> None:
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 0])
    with pytest.warns(UserWarning, match="probabilities"):
        found = audit_lib.inspect(audit_lib.load_factory("usernet:prob_net").eval(), x, y)
    assert len(found) == 1
    with pytest.warns(UserWarning, match="second derivatives"):
        audit_lib.inspect(audit_lib.load_factory("usernet:functional_net").eval(), x, y)
    with pytest.warns(UserWarning, match="train mode"):
        audit_lib.inspect(audit_lib.load_factory("usernet:relu_net").train(), x, y)


def test_bad_factories_and_weights_are_refused(user: Path) -> None:
    for spec, match in (("usernet", "package.module:factory"), ("nomodule:f", "cannot import"),
                        ("usernet:missing", "callable"), ("usernet:not_a_model", "nn.Module")):  # fmt: skip
        with pytest.raises(ValueError, match=match):
            audit_lib.load_factory(spec)
    model = audit_lib.load_factory("usernet:relu_net")
    (user / "evil.pt").write_bytes(pickle.dumps(print))
    with pytest.raises(ValueError, match="weights-only"):
        audit_lib.load_weights(model, user / "evil.pt")
    torch.save({"state_dict": {"other.weight": torch.zeros(2)}}, user / "wrong.pt")
    with pytest.raises(ValueError, match="does not fit"):
        audit_lib.load_weights(model, user / "wrong.pt")
    with pytest.raises(FileNotFoundError):
        audit_lib.load_weights(model, user / "none.pt")


def test_audit_command(user: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(user)
    torch.save({"model": audit_lib.load_factory("usernet:relu_net").state_dict()}, user / "w.pt")
    args = ["audit", "--model", "usernet:relu_net", "--weights", "w.pt", "--data", "images", "--size", "8",
            "--n", "6", "--eps", "0.1", "--step-size", "0.05", "--k", "8", "--set", "ifia.steps=2",
            "--set", "ifia.ig_steps=3",
            "--set", "pgd.steps=2", "--metrics", "gini", "--out", "out", "-q"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "html: out/report.html" in result.output and "Gini" in result.output
    bad = CliRunner().invoke(app, ["audit", "--model", "usernet:nope", "--data", "images"])
    assert bad.exit_code == 2 and "error:" in bad.output
