"""cancel.lua: a flow run's unfinished tasks end cancelled, all or nothing, fenced by the
leases (a late ack or failure of a cancelled lease is refused), another flow untouched."""

from __future__ import annotations

from balancer.common import codec
from balancer.common.scripts import EXTEND_CANCELLED, FAIL_REFUSED, AddedTask, CancelTask, Child

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
    assert db.wake() == [f"k|{W}|0"]  # a slot is free, nothing was queued


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


# -- gated tasks, maps and open runs --------------------------------------------------


def _map(db: Db, map_id: str, state: str, mapped: int | None = None, deps: int = 0) -> None:
    """A mapped task as submit writes it (``map`` set, gated), expanded when ``mapped``."""
    db.put_task(map_id, state=state, upstream=deps)
    db.client.hset(db.keys.task(map_id), mapping={"map": 1, "gate": 1})
    if mapped is not None:
        db.client.hset(db.keys.task(map_id), "mapped", mapped)


def test_a_task_waiting_in_the_gate_is_cancelled_and_leaves_the_gate(db: Db) -> None:
    db.put_flow(2)
    db.put_task("up", state="completed")
    db.put_task("g", state="pending")  # a trigger task: upstreams settled, not decided
    db.client.hset(db.keys.task("g"), "gate", 1)
    db.client.zadd(db.keys.gate, {"g": 1})
    db.client.hset(db.keys.flow(FLOW), "remaining", 1)
    assert _cancel(db) == ("cancelled", 1)
    assert db.state("g") == "cancelled"
    assert db.client.zcard(db.keys.gate) == 0
    assert (db.flow("remaining"), db.flow("cancelled")) == ("0", "1")


def test_a_running_map_is_cancelled_with_every_child_queued_leased_or_running(
        db: Db) -> None:
    db.put_flow(2)
    _map(db, "m", "running", mapped=4, deps=3)
    db.put_task("after", state="pending", upstream=1)
    ids = ["m-0", "m-1", "m-2", "m-3"]
    for child in ids:
        db.put_task(child, children=[Child("m", Q, 1.0, gated=True)])
    db.put_task("m-3", state="completed")
    db.client.zrem(db.keys.queue(Q), "m-3")
    tokens = db.lease("m-0", "m-1")
    entries = db.client.lrange(db.keys.inbox(W), 0, -1)
    db.client.lrem(db.keys.inbox(W), 1, entries[1])  # m-1 taken by a slot
    db.scripts.mark_running(W, [("m-1", tokens["m-1"])])
    # total: the map and "after" as submitted, and its 4 children; m-3 done.
    db.client.hset(db.keys.flow(FLOW), mapping={"total": 6, "remaining": 5})
    db.client.delete(db.keys.wake)

    assert _cancel_with_children(db) == ("cancelled", 5)

    for t in ("m", "after", "m-0", "m-1", "m-2"):
        assert db.state(t) == "cancelled", t
    assert db.state("m-3") == "completed"
    assert db.queued() == {} and db.leases() == set() and db.inbox() == []
    assert db.client.lrange(db.keys.cancels(W), 0, -1) == [f"m-1|{tokens['m-1']}".encode()]
    assert (db.flow("state"), db.flow("remaining"), db.flow("cancelled"), db.flow("total")
            ) == ("cancelled", "0", "5", "6")
    # A late ack of a child is refused: the map never comes back to the gate.
    assert db.ack("m-1", tokens["m-1"], Child("m", Q, 1.0, gated=True)) is False
    assert db.client.zcard(db.keys.gate) == 0


def _cancel_with_children(db: Db) -> tuple[str, int]:
    """cancel_flow with the flow's own tasks listed (not the map's children, which the
    cancel finds from the map's record)."""
    own = [t for t in ("m", "after", "up", "g") if db.state(t) is not None]
    db.client.hset(db.keys.flow(FLOW), "tasks", codec.pack([[t, t] for t in own]))
    done = cancel_flow(db.client, db.keys, FLOW, TTL)
    return done.state, done.cancelled


def test_a_map_expanded_after_the_caller_looked_writes_nothing_and_is_named(db: Db) -> None:
    db.put_flow(1)
    _map(db, "m", "pending")
    db.client.zadd(db.keys.gate, {"m": 1})
    seen = [CancelTask("m", Q)]  # pending, not expanded: what the caller saw
    db.client.hset(db.keys.task("m"), mapping={"state": "running", "mapped": 1, "deps": 1})
    db.put_task("m-0")  # expanded meanwhile: a child the caller did not see
    reply = db.scripts.cancel(FLOW, seen, TTL)
    assert reply.retry == ("m",)
    assert (db.state("m"), db.state("m-0"), db.flow("state")) == ("running", "queued",
                                                                  "running")
    assert _cancel_with_children(db) == ("cancelled", 2)  # looks again: finds the child
    assert db.state("m-0") == "cancelled" and db.queued() == {}


def test_a_map_not_yet_expanded_is_cancelled_and_its_gate_entry_goes(db: Db) -> None:
    db.put_flow(2)
    db.put_task("up", children=[Child("m", Q, 1.0, gated=True)])
    _map(db, "m", "pending", deps=1)
    token = db.lease("up")["up"]
    db.client.delete(db.keys.inbox(W))
    assert _cancel_with_children(db) == ("cancelled", 2)
    assert db.ack("up", token, Child("m", Q, 1.0, gated=True)) is False  # refused
    assert db.client.zcard(db.keys.gate) == 0 and db.state("m") == "cancelled"
    assert db.task("m").get("mapped") is None


def _open_run(db: Db, *task_ids: str) -> None:
    """An open run (a @flow function's) whose tasks are listed in flow:<id>:tasks only."""
    db.client.hset(db.keys.flow(FLOW), mapping={
        "id": FLOW, "name": "dyn", "state": "running", "total": len(task_ids),
        "remaining": len(task_ids) + 1, "failed": 0, "open": 1, "tasks": codec.pack([])})
    for t in task_ids:
        db.client.rpush(db.keys.flow_tasks(FLOW), codec.pack([t, t, "task"]))


def test_an_open_run_is_cancelled_with_the_tasks_its_function_added(db: Db) -> None:
    db.put_task("a")
    db.put_task("b", state="pending", upstream=1)  # waits for the client's watcher
    _open_run(db, "a", "b")
    done = cancel_flow(db.client, db.keys, FLOW, TTL)
    assert (done.state, done.cancelled) == ("cancelled", 2)
    assert db.state("a") == db.state("b") == "cancelled"
    assert (db.flow("remaining"), db.flow("open"), db.flow("cancelled")) == ("0", "0", "2")
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"cancelled"]
    # The function's next submit is refused as cancelled; its watcher's release and its
    # close change nothing.
    added = AddedTask("c", Q, 1.0, codec.pack(["c", "c", "task"]), {"state": "queued"})
    assert db.scripts.flow_extend(FLOW, [added], "s|q") == EXTEND_CANCELLED
    assert not db.client.exists(db.keys.task("c"))
    assert db.scripts.flow_release("b", Q, 1.0, FLOW, TTL, b"", "s|q") == 0
    assert db.scripts.flow_close(FLOW, "completed", TTL, b"") == 0
    assert (db.state("b"), db.flow("state"), db.flow("remaining")) == ("cancelled",
                                                                       "cancelled", "0")
    assert db.queued() == {}


def test_a_task_added_to_an_open_run_after_the_caller_looked_makes_it_look_again(
        db: Db) -> None:
    db.put_task("a")
    _open_run(db, "a")
    seen = [CancelTask("a", Q)]
    db.put_task("late")
    db.client.rpush(db.keys.flow_tasks(FLOW), codec.pack(["late", "late", "task"]))
    reply = db.scripts.cancel(FLOW, seen, TTL, listed=1)
    assert reply.retry and db.flow("state") == "running" and db.state("a") == "queued"
    done = cancel_flow(db.client, db.keys, FLOW, TTL)
    assert (done.state, done.cancelled) == ("cancelled", 2)
    assert db.state("late") == "cancelled"


def test_tasks_parked_because_their_queue_key_is_of_another_type_are_cancelled(
        db: Db) -> None:
    """A task waiting in the delayed set because its queue refused it (the prelude's
    enqueue) is cancelled there; the queue key of another type is read and left alone,
    not a reason to refuse the cancel or to look again for ever."""
    db.put_flow(2)
    db.put_task("parked", state="queued", queue="broken")
    db.put_task("dependent", state="pending", queue="broken")  # made ready, parked too
    db.client.zadd(db.keys.delayed, {"parked": 1, "dependent": 1})
    db.client.set(db.keys.queue("broken"), "a string, not a queue")
    assert _cancel(db) == ("cancelled", 2)
    assert db.state("parked") == db.state("dependent") == "cancelled"
    assert db.client.zcard(db.keys.delayed) == 0
    assert db.client.get(db.keys.queue("broken")) == b"a string, not a queue"


def test_a_run_with_a_clobbered_task_record_can_still_be_cancelled(db: Db) -> None:
    """One task's record is not a hash (a Redis writer): it is left as it is, and every
    other task and the run are cancelled, instead of the cancel failing for ever."""
    db.put_flow(2)
    db.put_task("q1")
    db.put_task("x")
    db.client.hset(db.keys.flow(FLOW), "tasks", codec.pack([["q1", "q1"], ["x", "x"]]))
    db.client.set(db.keys.task("x"), "not a task record")
    done = cancel_flow(db.client, db.keys, FLOW, TTL)
    assert (done.state, done.cancelled) == ("cancelled", 1)
    assert db.state("q1") == "cancelled" and db.flow("state") == "cancelled"
    assert db.client.get(db.keys.task("x")) == b"not a task record"


def test_a_task_record_clobbered_after_the_caller_looked_is_left_and_the_rest_cancelled(
        db: Db) -> None:
    db.put_flow(2)
    db.put_task("q1")
    db.put_task("x")
    db.client.set(db.keys.task("x"), "not a task record")  # after cancel_flow looked
    reply = db.scripts.cancel(FLOW, [CancelTask("q1", Q), CancelTask("x", Q)], TTL)
    assert (reply.state, reply.cancelled) == ("cancelled", 1)
    assert db.state("q1") == "cancelled"
