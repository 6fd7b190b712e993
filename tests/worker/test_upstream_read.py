"""A task's upstream results read through a fault: the read is sent again whole."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from balancer.common.keys import Keys
from balancer.worker import slot


def test_upstream_results_read_again_after_a_dropped_connection_are_all_there(
        fake: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py empties a pipeline when its execute fails; a retry of that same pipeline
    returned no replies, and the task ran as if its upstream had no result."""
    keys = Keys("ns")
    fake.hset(keys.task("u1"), mapping={"state": "completed", "result": b"\x01"})
    fake.hset(keys.task("u2"), mapping={"state": "completed", "result": b"\x02"})
    real_execute = redis.client.Pipeline.execute
    faults = [redis.ConnectionError("Connection closed by server.")]

    def execute(pipe: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        if faults:
            pipe.reset()  # what redis-py's execute does on its way out of an error
            raise faults.pop()
        return real_execute(pipe, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    read = slot.read_upstream(fake, keys, "t1", ["u1", "u2"])
    assert read == [("u1", [b"completed", b"\x01"]), ("u2", [b"completed", b"\x02"])]
    assert faults == []
