"""A process pool's forkserver forked from the supervisor (worker.zygote), in a process
of its own as a worker's supervisor is: it forks the pool's processes as multiprocessing's
own would, and ends with the process that started it."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys

import psutil
import pytest

from tests.conftest import ROOT, wait_for

pytestmark = pytest.mark.skipif("forkserver" not in multiprocessing.get_all_start_methods(),
                                reason="no forkserver on this platform")


def _probe(*args: str) -> dict[str, object]:
    probe = subprocess.run([sys.executable, "-m", "tests.worker.zygote_probe", *args],
                           cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    seen: dict[str, object] = json.loads(probe.stdout)
    return seen


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_forkserver_forked_from_its_starter_starts_processes_and_ends_with_it() -> None:
    seen = _probe()
    assert seen["started"] is True
    assert seen["server_parent"] == seen["me"]
    assert seen["forked"] is True  # a fork of the probe (its command line), no new python
    assert seen["parent_of_process"] == seen["server"]
    assert seen["exitcode"] == 0  # read back through the forkserver, as multiprocessing does
    wait_for(lambda: _gone(int(str(seen["server"]))), timeout=10)


def test_a_process_running_threads_leaves_its_forkserver_to_multiprocessing() -> None:
    """A fork copies the locks other threads hold: multiprocessing starts a new
    interpreter as its forkserver instead."""
    seen = _probe("threads")
    assert seen["started"] is False
    assert seen["forked"] is False
    assert seen["parent_of_process"] == seen["server"]
    assert seen["exitcode"] == 0
