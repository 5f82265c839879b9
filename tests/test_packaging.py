"""The installed package, not the source checkout: a wheel built from this tree and installed (without its
dependencies, which the running environment provides) into a temporary folder finds its presets, reports its
version and ships ``py.typed``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

import attrobust
from attrobust.cli import app
from attrobust.experiments.protocol import config_dir

ROOT = Path(__file__).resolve().parents[1]
BUILD_FILES = ("pyproject.toml", "setup.py", "README.md")


def _setuptools_can_build() -> bool:
    """The build runs without isolation (nothing is downloaded), so the environment's setuptools must meet
    ``build-system.requires`` (``setuptools>=77``)."""
    try:
        return int(version("setuptools").split(".")[0]) >= 77
    except Exception:  # no setuptools at all
        return False


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the installed wheel of this tree (``pip install --target``)."""
    if not _setuptools_can_build():
        pytest.skip("building the wheel offline needs setuptools>=77 in this environment")
    tree = tmp_path_factory.mktemp("tree")
    for name in BUILD_FILES:
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(ROOT / "configs", tree / "configs")
    skip = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "src" / "attrobust", tree / "src" / "attrobust", ignore=skip)
    wheels, site = tmp_path_factory.mktemp("wheels"), tmp_path_factory.mktemp("site")
    pip = [sys.executable, "-m", "pip", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(wheels), str(tree)],
                   check=True, capture_output=True)  # fmt: skip
    (wheel,) = wheels.glob("attrobust-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)  # fmt: skip
    return site


def _run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``args`` with only the installed copy importable (not ``src/``), outside the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTROBUST_CONFIGS")}
    env["PYTHONPATH"] = str(site)
    return subprocess.run(args, cwd=site.parent, env=env, capture_output=True, text=True, timeout=300)


def test_the_installed_cli_finds_its_presets(site: Path) -> None:
    shown = _run(site, sys.executable, "-m", "attrobust", "bench", "tables")
    assert shown.returncode == 0, shown.stderr
    tables = sorted(p.parent.name for p in (ROOT / "configs").glob("*/_eval.yaml"))
    assert tables and [line.split()[0] for line in shown.stdout.splitlines()] == tables


def test_the_installed_package_resolves_the_demo_and_a_table_from_its_own_copy(site: Path) -> None:
    code = (
        "import attrobust\n"
        "from attrobust.experiments.bench import quickstart_configs, table_configs\n"
        "from attrobust.experiments.protocol import config_dir\n"
        "runs, _ = quickstart_configs('runs')\n"
        "table, _, _ = table_configs('rar_mnist', 'runs', 'cpu')\n"
        "print(attrobust.__file__, config_dir(), len(runs), len(table), sep='\\n')\n"
    )
    shown = _run(site, sys.executable, "-c", code)
    assert shown.returncode == 0, shown.stderr
    module, presets, n_quick, n_table = shown.stdout.split("\n")[:4]
    assert Path(module).is_relative_to(site) and Path(presets) == site / "attrobust" / "configs"
    assert int(n_quick) > 0 and int(n_table) > 0


def test_every_preset_file_and_py_typed_are_installed(site: Path) -> None:
    ours = sorted(p.relative_to(ROOT / "configs") for p in (ROOT / "configs").rglob("*") if p.is_file())
    installed = site / "attrobust" / "configs"
    assert ours and sorted(p.relative_to(installed) for p in installed.rglob("*") if p.is_file()) == ours
    assert (site / "attrobust" / "py.typed").is_file()


def test_the_installed_console_script_prints_the_version(site: Path) -> None:
    (dist,) = site.glob("attrobust-*.dist-info")
    assert dist.name == f"attrobust-{attrobust.__version__}.dist-info"  # the metadata's version is __version__
    shown = _run(site, str(site / "bin" / "attrobust"), "--version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.strip() == f"attrobust {attrobust.__version__}"


def test_version_option() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"attrobust {attrobust.__version__}"


def test_a_missing_preset_directory_says_where_it_looked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ATTROBUST_CONFIGS", str(tmp_path / "none"))
    with pytest.raises(ValueError, match=r"preset directory not found: expected .* in \S+none; .*ATTROBUST_CONFIGS"):
        config_dir()
