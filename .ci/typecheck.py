#!/usr/bin/env python3
"""Run mypy (configured in pyproject.toml: strict) on the installed package names.

Why a script and not a bare `mypy -p balancer`: the repository keeps common/ and worker/
at its top and installs them as balancer.common and balancer.worker
([tool.setuptools.package-dir]). The editable install maps them with an import hook,
which mypy cannot follow (python/mypy#13392), and no search path can express the
mapping. So this builds the package as installed, out of symlinks, under
build/typecheck/ (the mypy_path of the config), runs mypy there, and prints its report
with the repository's own paths. Nothing is copied: an edit is seen by the next run.

What is checked: the packages that ship ``py.typed`` (balancer, balancer.common,
balancer.worker), strictly. tests/ and bench/ are not: tests drive fakeredis, monkeypatch
and reach into private state, where strict annotations would be noise rather than checks,
and bench/compare imports peers (celery, arq, ...) installed only with the bench extra.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from mypy import api

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: mypy depends on tomli there
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
TREE = ROOT / "build" / "typecheck"


def build_tree() -> dict[str, str]:
    """Link each package folder of the mapping into TREE, as it is installed; returns the
    tree's paths of the folders mapped, to write the repository's paths back."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    mapping: dict[str, str] = config["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(TREE, ignore_errors=True)
    rewrite = {}
    for package, folder in sorted(mapping.items()):  # parents before their subpackages
        target = TREE.joinpath(*package.split("."))
        target.mkdir(parents=True, exist_ok=True)
        source = ROOT / folder
        for entry in source.iterdir():
            if entry.name != "__pycache__" and not (target / entry.name).exists():
                (target / entry.name).symlink_to(entry)
        rewrite[f"{target.relative_to(ROOT)}/"] = f"{folder}/"
    return rewrite


def main() -> int:
    os.chdir(ROOT)  # mypy_path is relative to the working directory, and so are reports
    rewrite = build_tree()
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml"),
                                      *sys.argv[1:]])
    # Longest first: build/typecheck/balancer/common/ before build/typecheck/balancer/.
    for tree_path in sorted(rewrite, key=len, reverse=True):
        stdout = stdout.replace(tree_path, rewrite[tree_path])
    sys.stdout.write(stdout)
    sys.stderr.write(stderr)
    return status


if __name__ == "__main__":
    raise SystemExit(main())
