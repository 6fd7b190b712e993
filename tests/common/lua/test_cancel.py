"""cancel.lua: a flow run's unfinished tasks end cancelled, all or nothing, fenced by the
leases (a late ack or failure of a cancelled lease is refused), another flow untouched."""

from __future__ import annotations

from balancer.common import codec
from balancer.common.scripts import FAIL_REFUSED, CancelTask, Child

from balancer.cancel import cancel_flow
from tests.common.lua.db import FLOW, TTL, Db, Q, W


def _cancel(db: Db, flow: str = FLOW) -> tuple[str, int]:
    """cancel_flow, after listing the flow's tasks as submit lists them."""
    ids = [t.decode().rsplit(":", 1)[1] for t in db.client.keys(db.keys.task("*"))]
    mine = [t for t in ids if db.field(db.keys.task(t), "flow") == flow]
    db.client.hset(db.keys.flow(flow), "tasks", codec.pack([[t, t] for t in sorted(mine)]))
    done = cancel_flow(db.client, db.keys, flow, TTL)
    return done.state, done.cancelled


def test_every_unfinished_task_ends_cancelled_and_the_flow_with_them(db: Db) -> None:
    db.put_flow(6)
    child = Child("p", Q, 5.0)
    db.put_task("q1")  # queued
    db.put_task("l1", children=[child])  # leased, still in the inbox
    db.put_task("r1", timeout=30)  # leased, taken and running
    db.put_task("p", state="pending", upstream=1)
    db.put_task("d1", state="retrying")
    db.client.zadd(db.keys.delayed, {"d1": 1})
    db.put_task("done", state="completed")
    tokens = db.lease("l1", "r1")
    entries = db.client.lrange(db.keys.inbox(W), 0, -1)
    db.client.lrem(db.keys.inbox(W), 1, entries[1])  # r1 taken by a slot
    db.scripts.mark_running(W, [("r1", tokens["r1"])])
    db.client.hset(db.keys.flow(FLOW), mapping={"remaining": 5})  # "done" counted
    db.client.delete(db.keys.wake)

    assert _cancel(db) == ("cancelled", 5)

    for t in ("q1", "l1", "r1", "p", "d1"):
        assert db.state(t) == "cancelled", t
    assert db.state("done") == "completed"
    assert (db.flow("state"), db.flow("remaining"), db.flow("cancelled")) == (
        "cancelled", "0", "5")
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"cancelled"]
    assert db.queued() == {} and db.client.zcard(db.keys.delayed) == 0
    assert db.leases() == set() and db.inbox() == [] and db.deadlines() == set()
    # Only the lease a slot had taken is told to the worker; the inbox entry just went.
    assert db.client.lrange(db.keys.cancels(W), 0, -1) == [f"r1|{tokens['r1']}".encode()]
    assert db.wake() == [f"a|{W}|0"]


def test_a_late_ack_or_failure_of_a_cancelled_lease_is_refused(db: Db) -> None:
    db.put_flow(2)
    child = Child("b", Q, 5.0)
    db.put_task("a", children=[child])
    db.put_task("b", state="pending", upstream=1)
    token = db.lease("a")["a"]
    db.client.delete(db.keys.inbox(W))
    assert _cancel(db) == ("cancelled", 2)
    assert db.ack("a", token, child) is False
    assert db.fail("a", token) == FAIL_REFUSED
    assert db.state("a") == db.state("b") == "cancelled"
    assert db.queued() == {}  # b was never queued
    assert (db.flow("remaining"), db.flow("cancelled"), db.flow("failed")) == ("0", "2", "0")


def test_an_ack_first_completes_its_task_and_the_cancel_takes_the_rest(db: Db) -> None:
    db.put_flow(2)
    child = Child("b", Q, 5.0)
    db.put_task("a", children=[child])
    db.put_task("b", state="pending", upstream=1)
    token = db.lease("a")["a"]
    db.client.delete(db.keys.inbox(W))
    assert db.ack("a", token, child) is True
    assert db.queued() == {"b": 5.0}
    assert _cancel(db) == ("cancelled", 1)
    assert (db.state("a"), db.state("b")) == ("completed", "cancelled")
    assert db.queued() == {}
    assert (db.flow("remaining"), db.flow("cancelled")) == ("0", "1")


def test_a_second_cancel_and_a_cancel_of_a_finished_flow_change_nothing(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    assert _cancel(db) == ("cancelled", 1)
    before = (db.task("a"), db.client.hgetall(db.keys.flow(FLOW)))
    assert _cancel(db) == ("cancelled", 0)
    assert (db.task("a"), db.client.hgetall(db.keys.flow(FLOW))) == before
    assert db.client.llen(db.keys.flow_done(FLOW)) == 1
    db.put_flow(1, flow="f2")
    db.client.hset(db.keys.flow("f2"), "state", "completed")
    assert _cancel(db, "f2") == ("completed", 0)


def test_another_flow_is_untouched(db: Db) -> None:
    db.put_flow(1)
    db.put_flow(2, flow="f2")
    db.put_task("a")
    db.put_task("x", flow="f2")
    db.put_task("y", flow="f2")
    tokens = db.lease("a", "y")
    assert _cancel(db) == ("cancelled", 1)
    assert db.queued() == {"x": 1000.0}
    assert db.leases() == {f"y|{tokens['y']}"}
    assert [lease.task_id for lease in db.inbox()] == ["y"]
    assert (db.state("x"), db.flow("state", "f2")) == ("queued", "running")


def test_a_task_leased_after_the_caller_looked_writes_nothing_and_is_named(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    db.lease("a")  # the caller below saw "a" queued, with no lease
    reply = db.scripts.cancel(FLOW, [CancelTask("a", Q), CancelTask("b", Q)], TTL)
    assert reply.retry == ("a",)
    assert (db.state("a"), db.state("b"), db.flow("state")) == ("queued", "queued", "running")
    assert db.queued() == {"b": 1000.0}
    assert _cancel(db) == ("cancelled", 2)  # cancel_flow looks again and finds the lease


def test_a_quarantined_task_is_cancelled_and_leaves_the_dead_letters(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", state="dead")
    db.client.zadd(db.keys.dlq, {"a": 1})
    assert _cancel(db) == ("cancelled", 1)
    assert db.client.zcard(db.keys.dlq) == 0
