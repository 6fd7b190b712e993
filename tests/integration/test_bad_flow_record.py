"""A flow record whose counters a Redis writer broke ends that flow, never the worker."""

from __future__ import annotations

import subprocess
import sys

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import ROOT, Processes, wait_for
from tests.integration import tasks


@pytest.mark.parametrize("field", ["remaining", "failed"])
def test_a_flow_whose_counters_are_not_numbers_ends_failed_and_others_keep_completing(
        procs: Processes, real: redis.Redis, namespace: str, field: str) -> None:
    keys = Keys(namespace)
    procs.serve_and_worker(real, namespace, "--concurrency", "2", "--pool", "thread")
    with Flow("broken") as flow:
        slow = tasks.sleep_for(1.0)
        tasks.add(slow, 1)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: run.task_state(slow) == "running", timeout=30)
    real.hset(keys.flow(run.id), field, "not a number")
    assert run.wait(timeout=30) == "failed"
    assert f"record's {field!r} count was no number" in run.message
    shown = subprocess.run([sys.executable, "-m", "balancer.cli", "flow", run.id], cwd=ROOT,
                           env=procs.env, capture_output=True, text=True, timeout=30)
    assert f"ended as failed: its record's {field!r} count was no number" in shown.stdout
    for i in range(3):  # the worker acknowledges everything else as before
        with Flow(f"after-{i}") as other:
            tasks.square(i)
        assert other.submit(real, namespace=namespace).wait(timeout=30) == "completed"
