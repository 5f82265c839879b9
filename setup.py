"""Package layout (all other metadata is in ``pyproject.toml``).

The code lives in ``src/attrobust``; the YAML presets stay in the repository's top-level ``configs/`` and ship
inside the package as ``attrobust/configs`` (a ``package_dir`` mapping, each preset folder a data-only package),
so an installed ``attrobust`` finds its presets without a source checkout
(``attrobust.experiments.protocol.config_dir``). ``py.typed`` marks the package as typed (PEP 561).
"""

from setuptools import find_namespace_packages, find_packages, setup

PRESETS = ["attrobust." + name for name in find_namespace_packages(include=["configs", "configs.*"])]

setup(
    packages=[*find_packages("src"), *PRESETS],
    package_dir={"": "src", "attrobust.configs": "configs"},
    package_data={"attrobust": ["py.typed"], **{name: ["*.yaml"] for name in PRESETS}},
)
