"""balancer status: who is heard from, and a bad entry that never fails the command."""

from __future__ import annotations

import redis
from balancer.common.connection import server_time_ms
from balancer.common.keys import Keys

from balancer import status


def test_status_tells_the_standbys_from_the_leader(real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    now_ms = server_time_ms(real, keys.workers)
    real.set(keys.leader, "3|lead-1")
    real.zadd(keys.dispatchers, {"lead-1": now_ms, "standby-1": now_ms - 1000,
                                 "long-gone": now_ms - 60_000, b"\xff": now_ms})
    seen = status.gather(real, keys, leader_ttl=5.0)
    assert [d.id for d in seen.dispatchers] == ["lead-1", "standby-1"]
    assert [d.id for d in seen.standbys] == ["standby-1"]
    assert seen.to_dict()["standbys"] == [{"id": "standby-1", "seen_s": seen.standbys[0].seen_s}]
    assert "standby dispatchers: standby-1 (seen" in status.render(seen)


def test_a_dispatchers_key_of_the_wrong_type_shows_none_and_fails_nothing(
        real: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    real.set(keys.dispatchers, "not a sorted set")
    seen = status.gather(real, keys)
    assert seen.dispatchers == [] and seen.standbys == []
    assert "standby dispatchers: none" in status.render(seen)


def _serving(queues: list[str]) -> status.Status:
    worker = status.WorkerRow("w1", queues, 1, 0, 0, 0.0, 0.0, 0.0, 0.0, "host", 1,
                              "process", 0.5, True)
    return status.Status(None, [worker], [], [], 0, 0)


def test_a_worker_serving_one_queue_named_with_a_comma_shows_apart_from_two_queues() -> None:
    one, two = status.render(_serving(["a,b"])), status.render(_serving(["a", "b"]))
    assert one != two
    assert " a,b " in one and " a b " in two
