"""A thread-pool task holding Python's lock for seconds (a long call into C) keeps its
worker's heartbeat thread from running: the worker says so, naming the cause and the
process pool, whose heartbeat the task cannot hold up. Real serve and workers."""

from __future__ import annotations

import pytest
import redis
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import Processes, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration


def test_a_thread_pool_worker_says_its_heartbeat_was_held_up_by_a_task_holding_the_gil(
        procs: Processes, namespace: str, real: redis.Redis) -> None:
    procs.serve()
    worker = procs.worker("--pool", "thread", "--concurrency", "1")
    wait_for(lambda: real.zcard(Keys(namespace).workers) == 1, timeout=30)
    with Flow("holds-the-gil") as flow:
        tasks.hold_the_gil(6.0)
    flow.submit(real, namespace=namespace)
    wait_for(lambda: "its heartbeat came" in procs.log(worker), timeout=120)
    log = procs.log(worker)
    assert "holding Python's lock" in log and "--pool process" in log, log


def test_a_process_pool_worker_beats_on_while_its_task_holds_the_gil(
        procs: Processes, namespace: str, real: redis.Redis) -> None:
    serve = procs.serve()
    worker = procs.worker("--pool", "process", "--concurrency", "1")
    wait_for(lambda: real.zcard(Keys(namespace).workers) == 1, timeout=30)
    with Flow("holds-the-gil") as flow:
        tasks.hold_the_gil(6.0)
    run = flow.submit(real, namespace=namespace)
    assert run.wait(timeout=120) == "completed"
    assert "reaped" not in procs.log(serve)
    assert "had been declared dead" not in procs.log(worker)
