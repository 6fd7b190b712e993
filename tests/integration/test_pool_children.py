"""Process-pool slots: each is a child process that fetches, runs and acknowledges its
tasks itself, watched by its supervisor (timeouts, long runs, crashes). Real Redis, real
child processes, the dispatcher and the supervisor in this process."""

from __future__ import annotations

import os
import uuid

import redis

from balancer import Flow
from common.keys import Keys
from tests.conftest import wait_for
from tests.integration import tasks
from tests.integration.conftest import ThreadCluster
from worker.childslot import ChildSlot


def _child_pid(cluster: ThreadCluster) -> int:
    slot = cluster.workers[0].slots[0]
    assert isinstance(slot, ChildSlot)
    pid = slot.process.pid
    assert pid is not None
    return pid


def test_a_pool_child_runs_and_acknowledges_tasks_in_its_own_process(
        cluster: ThreadCluster, real: redis.Redis) -> None:
    cluster.add_worker(concurrency=1, pool="process")
    with Flow("pids") as flow:
        nodes = [tasks.whoami() for _ in range(5)]
    run = flow.submit(real, namespace=cluster.settings.namespace)
    assert run.wait(timeout=30) == "completed"
    pids = {run.result(n) for n in nodes}
    assert pids == {_child_pid(cluster)} and os.getpid() not in pids


def test_a_pool_child_past_its_timeout_is_killed_and_replaced(
        cluster: ThreadCluster, real: redis.Redis) -> None:
    cluster.add_worker(concurrency=1, pool="process")
    wait_for(lambda: _child_pid(cluster) is not None)
    first = _child_pid(cluster)
    with Flow("hangs") as flow:
        hung = tasks.short_timeout(30)
    run = flow.submit(real, namespace=cluster.settings.namespace)
    assert run.wait(timeout=30) == "failed"
    error = run.error(hung)
    assert error is not None and error.type == "TimeoutError"
    wait_for(lambda: _child_pid(cluster) != first)
    with Flow("after") as again:
        node = tasks.whoami()
    run2 = again.submit(real, namespace=cluster.settings.namespace)
    assert run2.wait(timeout=30) == "completed"
    assert run2.result(node) == _child_pid(cluster) != first


def test_a_task_killing_its_pool_child_counts_a_loss_and_runs_again(
        cluster: ThreadCluster, real: redis.Redis, redis_url: str) -> None:
    cluster.add_worker(concurrency=1, pool="process")
    keys = Keys(cluster.settings.namespace)
    gate = f"{cluster.settings.namespace}:gate-{uuid.uuid4().hex[:6]}"
    with Flow("crash") as flow:
        node = tasks.crash_unless(redis_url, gate)
    run = flow.submit(real, namespace=cluster.settings.namespace)
    task_key = keys.task(run.ids[node])
    wait_for(lambda: int(real.hget(task_key, "lost") or 0) >= 1, timeout=20)
    real.set(gate, 1)
    try:
        assert run.wait(timeout=30) == "completed"
        assert run.result(node) == "survived"
    finally:
        real.delete(gate)


def test_a_long_run_in_a_pool_child_shows_as_running(
        cluster: ThreadCluster, real: redis.Redis) -> None:
    worker = cluster.add_worker(concurrency=1, pool="process")
    with Flow("long") as flow:
        node = tasks.sleep_for(1.5)
    run = flow.submit(real, namespace=cluster.settings.namespace)
    wait_for(lambda: run.task_state(node) == "running", timeout=20)
    assert worker.holding.long_running() == 1 and worker.busy() == 1
    assert run.wait(timeout=30) == "completed"
    wait_for(lambda: worker.holding.long_running() == 0 and worker.busy() == 0)
