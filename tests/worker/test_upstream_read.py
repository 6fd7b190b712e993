"""A task's upstream results: read through a fault (the read is sent again whole), and
told apart from a read of a server that does not hold what the lease came from."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from balancer.common import codec
from balancer.common.keys import Keys
from balancer.worker import slot


def test_upstream_results_read_again_after_a_dropped_connection_are_all_there(
        fake: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """redis-py empties a pipeline when its execute fails; a retry of that same pipeline
    returned no replies, and the task ran as if its upstream had no result."""
    keys = Keys("ns")
    fake.hset(keys.task("u1"), mapping={"state": "completed", "result": b"\x01"})
    fake.hset(keys.task("u2"), mapping={"state": "completed", "result": b"\x02"})
    fake.hset(keys.task("t1"), mapping={"state": "queued"})
    real_execute = redis.client.Pipeline.execute
    faults = [redis.ConnectionError("Connection closed by server.")]

    def execute(pipe: redis.client.Pipeline, *args: Any, **kwargs: Any) -> Any:
        if faults:
            pipe.reset()  # what redis-py's execute does on its way out of an error
            raise faults.pop()
        return real_execute(pipe, *args, **kwargs)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    read = slot.read_upstream(fake, keys, "t1", ["u1", "u2"])
    assert read == (b"queued", [("u1", [b"completed", b"\x01"]),
                                ("u2", [b"completed", b"\x02"])])
    assert faults == []


def test_an_upstream_read_as_unfinished_puts_the_task_back_instead_of_failing_it() -> None:
    """A dependent is queued only once its upstreams finished: one that reads queued or
    running was read from a server that has not seen it finish (a worker whose connections
    straddle an old and a new master): not the flow's state, not the task's fault."""
    for state in (b"queued", b"running", b"pending", b"retrying"):
        with pytest.raises(slot.UpstreamUnread, match=f"u1 reads {state.decode()}"):
            slot.upstream_results(b"running", [("u1", [state, None])])


def test_an_upstream_record_missing_with_the_tasks_own_is_a_foreign_read_not_an_expiry(
        ) -> None:
    with pytest.raises(slot.UpstreamUnread, match="u1 reads expired"):
        slot.upstream_results(None, [("u1", [None, None])])


def test_an_upstream_record_expired_under_a_live_task_fails_it_as_before() -> None:
    """A finished upstream's record expires after result_ttl, its dependent's does not:
    a dependent that waited longer fails with the upstream's result missing."""
    with pytest.raises(LookupError, match="u1 is not available \\(state expired\\)") as got:
        slot.upstream_results(b"queued", [("u1", [None, None])])
    assert not isinstance(got.value, slot.UpstreamUnread)


def test_finished_upstreams_give_their_results() -> None:
    results = slot.upstream_results(b"queued", [
        ("u1", [b"completed", codec.pack(3)]), ("u2", [b"failed", None])])
    assert results == {"u1": 3, "u2": None}
