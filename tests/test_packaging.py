"""What a wheel or `pip install .` (the Dockerfile's) installs: every package, listed in
pyproject.toml, since its folders are mapped (balancer.common is common/) and nothing is
found by itself. An editable install finds every folder anyway, so only this check and
tests/test_wheel.py (which builds the wheel and runs from it) tell.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    folders = {name: ROOT / folder for name, folder in config["package-dir"].items()}
    found = set()
    for name, folder in folders.items():
        for init in folder.rglob("__init__.py"):
            relative = init.parent.relative_to(folder).parts
            package = ".".join((name, *relative))
            if not any(part in ("__pycache__", "static") for part in relative):
                found.add(package)
    assert found - listed == set(), "packages a wheel would leave out"
    assert listed - found == set(), "listed packages that do not exist"
