"""A worker's --import modules are imported at start: one that fails stops the start with
one error naming it, whatever it raised."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from balancer.common import importpath
from balancer.common.settings import Settings
from balancer.worker.supervisor import Worker, WorkerError


def test_an_import_that_exits_stops_the_start_with_an_error_naming_it(
        fake: redis.Redis, settings: Settings, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """argparse exits on a command line it does not know: a module that parses sys.argv
    when imported would otherwise end the worker with argparse's usage line."""
    (tmp_path / "reads_argv.py").write_text(
        "import argparse\nargparse.ArgumentParser().parse_args(['--unknown'])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    worker = Worker(fake, settings, pool="thread", imports=("reads_argv",),
                    allow=(str(tmp_path),))
    try:
        with pytest.raises(WorkerError, match="--import reads_argv: SystemExit: 2"):
            worker.start()
    finally:
        importpath.set_policy(importpath.TaskPolicy.of())  # start() set the worker's
