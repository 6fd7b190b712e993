"""``future.add_done_callback`` (balancer/futures.py): the one watcher thread of a process
calls each future's callbacks once its task has ended, whatever another record holds."""

from __future__ import annotations

import time

import pytest
import redis
from balancer.common.keys import Keys

from balancer.futures import TaskFuture


def test_a_spoiled_record_costs_its_own_future_its_callbacks_and_no_one_elses(
        fake: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    """A field a Redis writer spoiled made the watcher's read raise: its thread ended,
    and no callback of any future of the process was called again."""
    keys = Keys("ns")
    fake.hset(keys.task("good"), mapping={"state": "running", "deps": 0})
    fake.hset(keys.task("spoiled"), mapping={"state": "running", "deps": 0})
    called: list[str] = []
    for task_id in ("spoiled", "good"):
        TaskFuture(fake, keys, task_id, task_id).add_done_callback(
            lambda f: called.append(f.task_id))
    fake.hset(keys.task("spoiled"), "deps", "not a number")
    fake.hset(keys.task("good"), "state", "completed")
    deadline = time.monotonic() + 10
    while not called and time.monotonic() < deadline:
        time.sleep(0.01)
    assert called == ["good"]
    assert "task=spoiled: its record cannot be read" in caplog.text
    later = TaskFuture(fake, keys, "good", "good")  # ended: called at once
    later.add_done_callback(lambda f: called.append("at once"))
    assert called == ["good", "at once"]
