"""Processes a task starts end with its pool process: a helper (a browser, ffmpeg, a
shell) left running by a task killed past its timeout, or cancelled, or behind a pool
process that stopped, is killed with it instead of living on orphaned. One the task
started in a session of its own is the task's to end. Real worker processes."""

from __future__ import annotations

import signal
import subprocess
import uuid

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import Processes, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration


def _running(marker: str) -> list[int]:
    found = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


@pytest.fixture
def markers() -> list[str]:
    made: list[str] = []
    yield made
    for marker in made:  # whatever a failing test left behind
        for pid in _running(marker):
            subprocess.run(["kill", "-9", str(pid)], check=False)


def test_a_helper_of_a_task_killed_past_its_timeout_is_killed_with_it(
        procs: Processes, real: redis.Redis, namespace: str, markers: list[str]) -> None:
    procs.serve_and_worker(real, namespace, "--concurrency", "2")
    marker = f"helper-{uuid.uuid4().hex[:8]}"
    markers.append(marker)
    with Flow("spawns") as flow:
        tasks.starts_a_helper(marker, 30.0)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: _running(marker), timeout=30)
    assert run.wait(timeout=60) == "failed"  # its timeout: 1 s
    wait_for(lambda: not _running(marker), timeout=10)


def test_helpers_end_with_the_pool_process_whose_tasks_started_them(
        procs: Processes, real: redis.Redis, namespace: str, markers: list[str]) -> None:
    """A task that returned, its helper still running: the helper ends when the worker
    stops (its pool process with it); one in a session of its own lives on."""
    procs.serve()
    worker = procs.worker("--concurrency", "1")
    wait_for(lambda: real.zcard(Keys(namespace).workers) >= 1, timeout=30)
    own, shared = f"own-{uuid.uuid4().hex[:8]}", f"shared-{uuid.uuid4().hex[:8]}"
    markers.extend([own, shared])
    with Flow("leaves-helpers") as flow:
        tasks.starts_a_helper(shared, 0.0)
        tasks.starts_a_helper(own, 0.0, own_session=True)
    assert flow.submit(real, namespace=namespace).wait(timeout=60) == "completed"
    assert _running(shared) and _running(own)
    assert procs.stop(worker, signal.SIGTERM) == 0
    wait_for(lambda: not _running(shared), timeout=10)
    assert _running(own)  # the task's own to end
