"""queue_rm.lua: an empty queue loses its settings, offer and name; one holding ready
tasks (a submit that came after the caller's checks) is left alone."""

from __future__ import annotations

from tests.common.lua.db import Db


def test_an_empty_queue_is_removed_with_its_settings_and_offer(db: Db) -> None:
    k = db.keys
    db.client.sadd(k.queues, "spare")
    db.client.hset(k.queue_conf("spare"), mapping={"priority": 3, "concurrency_limit": 2})
    db.client.set(k.offer("spare"), "w1")
    db.client.hset(k.inflight, mapping={"spare": 0, "other": 1})
    assert db.scripts.queue_rm("spare") == 1
    assert not db.client.sismember(k.queues, "spare")
    assert not db.client.exists(k.queue_conf("spare"), k.offer("spare"))
    assert db.client.hgetall(k.inflight) == {b"other": b"1"}
    assert db.wake() == ["q"]


def test_a_queue_holding_ready_tasks_is_left_alone(db: Db) -> None:
    k = db.keys
    db.put_task("t1", queue="busy")
    db.client.sadd(k.queues, "busy")
    db.client.hset(k.queue_conf("busy"), "priority", 1)
    assert db.scripts.queue_rm("busy") == 0
    assert db.client.sismember(k.queues, "busy") and db.queued("busy") == {"t1": 1000.0}
    assert db.client.hget(k.queue_conf("busy"), "priority") == b"1"
    assert db.wake() == []


def test_an_unknown_queue_is_reported(db: Db) -> None:
    assert db.scripts.queue_rm("never") == -1
