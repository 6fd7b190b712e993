"""Host load as a worker reports it: pressure from other processes on its own cores."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time

import pytest

from worker.heartbeat import HostLoad


def _foreign_hog(core: int) -> int:
    """A busy process pinned to ``core`` that is not this process's child (its parent
    shell exits at once), as another program on the host would be."""
    out = subprocess.run(
        ["bash", "-c", f"taskset -c {core} python3 -c 'while True: pass' >/dev/null 2>&1 &"
                       " echo $!"], capture_output=True, text=True, check=True)
    return int(out.stdout.strip())


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
def test_a_busy_foreign_process_on_the_workers_core_shows_as_pressure() -> None:
    core = max(os.sched_getaffinity(0))
    host = HostLoad()
    host.cores = [core]
    pid = _foreign_hog(core)
    try:
        host.sample()
        time.sleep(1.0)
        cpu, pressure, memory, _ = host.sample()
    finally:
        os.kill(pid, signal.SIGKILL)
    assert cpu > 0.6
    assert pressure > 0.6  # none of it is this process's
    assert 0.0 < memory < 1.0


def test_the_workers_own_work_is_not_pressure() -> None:
    host = HostLoad()
    host.sample()
    deadline = time.monotonic() + 0.6
    while time.monotonic() < deadline:  # this process keeps one core busy
        pass
    cpu, pressure, _, _ = host.sample()
    assert pressure <= cpu
    assert cpu - pressure >= 0.25 / len(host.cores)  # our own use was taken out
