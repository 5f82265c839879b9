"""`attrobust list KIND` / `--details` / `show NAME`: each entry's summary and parameters with their defaults,
read from the code itself (signatures and docstrings), names in any spelling their layer reads."""

from __future__ import annotations

import inspect

from typer.testing import CliRunner

from attrobust import objectives
from attrobust.cli import app
from attrobust.experiments import catalog

runner = CliRunner()


def test_list_kind_shows_every_entry_with_summary_and_defaults() -> None:
    for kind, registry in catalog.KINDS.items():
        result = runner.invoke(app, ["list", kind])
        assert result.exit_code == 0, result.output
        for name in registry.names():
            assert f"\n  {name}: " in "\n" + result.output, (kind, name)
            entry = registry.get(name)
            for p in inspect.signature(entry).parameters.values():
                if p.default is not p.empty and not isinstance(p.default, tuple):
                    assert f"{p.name}={p.default!r}" in result.output, (kind, name, p.name)


def test_list_details_covers_every_kind_and_an_unknown_kind_is_refused() -> None:
    result = runner.invoke(app, ["list", "--details"])
    assert result.exit_code == 0
    assert all(f"\n{kind}:\n" in "\n" + result.output for kind in catalog.KINDS)
    assert "pgd_at: PGD adversarial training" in result.output and "eps=0.3" in result.output
    singular = runner.invoke(app, ["list", "objective"])
    assert singular.exit_code == 0 and "trades+igr: " in singular.output
    bad = runner.invoke(app, ["list", "objectivs"])
    assert bad.exit_code == 2 and "error: KIND: expected one of datasets" in bad.output and "'objectivs'" in bad.output


def test_show_names_the_composite_parameters_in_either_spelling() -> None:
    factory = objectives.OBJECTIVES.get("trades+igr")
    for spelling in ("trades+igr", "trades_igr"):
        result = runner.invoke(app, ["show", spelling])
        assert result.exit_code == 0, result.output
        assert result.output.startswith("trades+igr (objective)\n")
        for name in factory.parameters({}):
            default = inspect.signature(factory).parameters[name].default
            assert f"\n    {name} = {default!r}\n" in result.output
    assert "lam = 1.0" in result.output and "ig_steps = 10" in result.output and "beta = 6.0" in result.output


def test_show_required_parameters_suite_measures_and_unknown_names() -> None:
    ig = runner.invoke(app, ["show", "ig"])
    assert ig.exit_code == 0 and "ig (attribution)" in ig.output and "    model (required)" in ig.output
    assert "    steps = 50" in ig.output
    smooth = runner.invoke(app, ["show", "smoothgrad"])
    assert smooth.exit_code == 0 and "\n    **base_options\n" in smooth.output
    road = runner.invoke(app, ["show", "road"])
    assert road.exit_code == 0 and "evaluate --metrics" in road.output and "suite." in road.output
    bad = runner.invoke(app, ["show", "tradse"])
    assert bad.exit_code == 2 and "error: name: expected a registered name, got 'tradse'" in bad.output
    assert "trades" in bad.output.split("did you mean")[1]


def test_every_objective_shows_exactly_the_parameters_it_accepts() -> None:
    for name in objectives.OBJECTIVES.names():
        factory = objectives.OBJECTIVES.get(name)
        assert set(inspect.signature(factory).parameters) == set(factory.parameters({})), name
    composite = catalog.describe("objectives", "pgd_at_igr")
    assert composite.name == "pgd_at+igr" and composite.summary.startswith("IGR (IGR paper eq. 3)")
    assert dict(composite.parameters)["eps"] == "0.3" and dict(composite.parameters)["lam"] == "1.0"


def test_summary_is_the_first_sentence_past_abbreviations() -> None:
    text = "PGD (Madry et al. 2018; eq. 2) on the l_inf ball. Second sentence."
    assert catalog.summary(text) == "PGD (Madry et al. 2018; eq. 2) on the l_inf ball"
    long = "word " * 40
    assert len(catalog.summary(long)) == catalog.SUMMARY_CHARS and catalog.summary(long).endswith("...")
