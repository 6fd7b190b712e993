"""release.lua: a worker hands back leases it will not run."""

from __future__ import annotations

from balancer.common import signals
from balancer.common.scripts import LeasedTask

from tests.common.lua.db import Db, Q, W


def test_release_hands_back_inbox_entries_at_their_place(db: Db) -> None:
    db.put_task("a", score=1.0)
    db.put_task("b", score=2.0)
    tokens = db.lease("a", "b")
    entry = db.inbox()[0]
    assert entry.task_id == "a"

    released = db.scripts.release(
        W, [LeasedTask("a", Q, tokens["a"], inbox_entry=entry.raw)])
    assert released == 1
    assert db.queued() == {"a": 1.0}
    record = db.task("a")
    assert record["state"] == "queued"
    assert "worker" not in record
    assert "lease" not in record
    assert [lease.task_id for lease in db.inbox()] == ["b"]
    assert db.leases() == {f"b|{tokens['b']}"}
    assert db.inflight() == "1"
    assert db.wake() == [signals.SUBMITTED]


def test_release_leaves_a_task_whose_entry_the_worker_took_meanwhile(db: Db) -> None:
    db.put_task("a", score=1.0)
    token = db.lease("a")["a"]
    [entry] = db.inbox()
    db.client.lpop(db.keys.inbox(W))  # a slot took it between the read and the release
    assert db.scripts.release(W, [LeasedTask("a", Q, token, inbox_entry=entry.raw)]) == 0
    assert db.leases() == {f"a|{token}"}  # still leased: the worker runs it
    assert db.queued() == {}


def test_release_hands_back_a_running_task_the_worker_lost_track_of(db: Db) -> None:
    db.put_task("a", score=1.0, timeout=10)
    token = db.lease("a")["a"]
    db.client.delete(db.keys.inbox(W))  # popped before the reply was lost
    db.scripts.mark_running(W, [("a", token)])
    assert db.deadline("a", token) is not None
    assert db.scripts.release(W, [LeasedTask("a", Q, token)]) == 1
    assert db.queued() == {"a": 1.0}
    record = db.task("a")
    assert (record["state"], record["lost"]) == ("queued", "0")
    assert "worker" not in record
    assert db.deadlines() == set()
    assert db.leases() == set()
    assert db.inflight() == "0"


def test_release_ignores_tasks_the_worker_no_longer_holds(db: Db) -> None:
    db.put_flow(2)
    db.put_task("done")
    db.put_task("theirs")
    mine = db.lease("done")
    assert db.ack("done", mine["done"])
    db.register("w2")
    theirs = db.lease("theirs", worker="w2", prefix="1.2")
    [their_entry] = db.inbox("w2")
    db.client.delete(db.keys.wake)

    released = db.scripts.release(W, [
        LeasedTask("done", Q, mine["done"]),
        LeasedTask("theirs", Q, theirs["theirs"], inbox_entry=their_entry.raw),
    ])
    assert released == 0
    assert (db.state("done"), db.state("theirs")) == ("completed", "queued")
    assert db.queued() == {}
    assert db.inbox("w2") == [their_entry]
    assert db.leases("w2") == {their_entry.member}
    assert db.inflight() == "1"
    assert db.wake() == []
