"""Work survives a worker killed with SIGKILL: its tasks run elsewhere, late acks are refused."""

from __future__ import annotations

import signal
import subprocess

import psutil
import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from bench.reap import wait_ended
from tests.conftest import Processes, wait_for
from tests.integration import tasks


def _dispatcher_and_doomed_worker(procs: Processes, real: redis.Redis, keys: Keys,
                                  slots: int = 1) -> subprocess.Popen[bytes]:
    """`balancer serve` and one process-pool worker named "doomed", registered."""
    procs.serve()
    doomed = procs.worker("--concurrency", str(slots), "--pool", "process", "--name", "doomed")
    wait_for(lambda: real.zcard(keys.workers) == 1, timeout=30)
    return doomed


@pytest.mark.parametrize("slots", [1, 2], ids=["one-child", "two-children"])
def test_tasks_of_a_killed_worker_run_on_another_worker(
    procs: Processes, real: redis.Redis, namespace: str, slots: int
) -> None:
    keys = Keys(namespace)
    doomed = _dispatcher_and_doomed_worker(procs, real, keys, slots)
    with Flow("survives") as flow:
        slow = tasks.sleep_for(1.0)
        after = tasks.add(slow, 1)
    run = flow.submit(real, namespace=namespace)
    wait_for(lambda: run.task_state(slow) == "running", timeout=20)
    below = psutil.Process(doomed.pid).children(recursive=True)
    # The pool children, their forkserver and the resource tracker it forked.
    assert len(below) == slots + 2
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(5)
    # The pool children die with their supervisor (through their forkserver, which ends
    # with it): no orphan finishes the task unwatched.
    assert not wait_ended(below, timeout=10)
    procs.worker("--concurrency", "1", "--pool", "thread", "--name", "rescuer")
    assert run.wait(timeout=30) == "completed"
    assert run.result(after) == 2.0
    record = real.hmget(keys.task(run.ids[flow.nodes[0]]), ["worker", "lost"])
    assert record == [b"rescuer", b"1"]  # it ran on the rescuer; the kill counted a loss
    assert real.exists(keys.leases("doomed"), keys.inbox("doomed")) == 0


def test_a_task_held_ahead_by_a_killed_worker_counts_no_loss_and_becomes_a_suspect(
    procs: Processes, real: redis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    doomed = _dispatcher_and_doomed_worker(procs, real, keys)
    with Flow("warm-up") as warm:  # the worker learns its tasks are short: batches follow
        for i in range(60):
            tasks.square(i)
    assert warm.submit(real, namespace=namespace).wait(timeout=30) == "completed"
    with Flow("batch") as flow:
        for i in range(5):
            tasks.square(i)
        slow = tasks.sleep_for(3.0)  # after the first of the batch: "ahead" in Redis
        for i in range(20):
            tasks.square(i)
    run = flow.submit(real, namespace=namespace)
    slow_key = keys.task(run.ids[slow])
    wait_for(lambda: run.task_state(slow) == "running", timeout=20)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(5)
    wait_for(lambda: real.hget(slow_key, "suspect") == b"1", timeout=30)
    procs.worker("--concurrency", "1", "--pool", "process", "--name", "rescuer")
    assert run.wait(timeout=30) == "completed"
    worker, lost, suspect = real.hmget(slow_key, ["worker", "lost", "suspect"])
    assert (worker, int(lost or 0), suspect) == (b"rescuer", 0, b"1")
    assert real.exists(keys.leases("doomed"), keys.ahead("doomed")) == 0
