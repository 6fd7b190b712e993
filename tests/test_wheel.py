"""What users install is a wheel (`pip install balancer`, the Dockerfile's `pip install .`),
not the editable checkout the other tests import. Its folders are mapped (balancer.common
is common/) and its scripts and pages are data files, so a file the packaging leaves out
breaks only installed copies: these tests build the wheel and run the README's first
example from it alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's wheel, built as pip builds it for an install (build isolation: the
    setuptools pyproject.toml asks for, from the package index), from a copy of the
    sources without the checkout's build leftovers: an editable install's egg-info lists
    every file it saw, and setuptools would ship them from that list whatever the
    package data says."""
    source = tmp_path_factory.mktemp("source") / "balancer"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", "*.egg-info", "build", "__pycache__", ".*_cache"))
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=240)
    assert built.returncode == 0, f"pip wheel failed:\n{built.stdout}\n{built.stderr}"
    (found,) = out.glob("balancer-*.whl")
    return found


def shipped_files() -> set[str]:
    """Every file of the packages' folders, as the wheel must hold it (balancer.common's
    folder common/ as balancer/common/), bytecode caches aside."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    expected = set()
    for package, folder in config["package-dir"].items():
        for path in (ROOT / folder).rglob("*"):
            relative = path.relative_to(ROOT / folder)
            if path.is_file() and "__pycache__" not in relative.parts:
                expected.add("/".join((*package.split("."), *relative.parts)))
    return expected


def test_the_wheel_holds_every_module_script_and_page_of_the_packages(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = shipped_files() - names
    assert missing == set(), f"files the wheel leaves out: {sorted(missing)}"
    assert "balancer/common/lua/ack.lua" in names and "balancer/dashboard/static/app.js" in names


def test_the_readme_example_runs_from_the_wheel_alone(wheel: Path, tmp_path: Path) -> None:
    """The wheel unpacked first on the path (the dependencies from this environment), the
    checkout out of reach: the flow runs on the embedded cluster through the wheel's Lua
    scripts, and the dashboard's page and both commands' help come from the wheel."""
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "etl.py", work / "etl.py")
    env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    where = subprocess.run(
        [sys.executable, "-c", "import balancer, balancer.common.luasource as s;"
         " from balancer.dashboard import server;"
         " print(balancer.__file__); print(s.__file__); print(len(server._static('app.js')))"],
        cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert where.returncode == 0, where.stderr
    package_file, lua_module, page_bytes = where.stdout.split()
    assert package_file.startswith(str(site)) and lua_module.startswith(str(site))
    assert int(page_bytes) > 0
    ran = subprocess.run([sys.executable, "etl.py"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert "flow completed: total = 100" in ran.stdout
    for command in ("balancer.cli", "balancer.worker.cli"):
        helped = subprocess.run(
            [sys.executable, "-c", f"from {command} import main; main()", "--help"],
            cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert helped.returncode == 0, helped.stderr
        assert "Usage:" in helped.stdout
