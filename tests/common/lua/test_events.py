"""The events the scripts write (common/events.py owns the format), on fakeredis and on the
real Redis: one entry per call, one event per task in it, and none of the per-task kinds
with task events off."""

from __future__ import annotations

from balancer.common import codec, events
from balancer.common.codec import ErrorInfo
from balancer.common.scripts import Child, Done, LeasedTask, Scripts

from tests.common.lua.db import FINISHED, FLOW, STARTED, TTL, Db, Q, W


def _events(db: Db) -> list[events.Event]:
    out = []
    for stream_id, fields in db.client.xrange(db.keys.events):
        out.extend(events.decode(stream_id, fields))
    return out


def _kinds(db: Db) -> list[str]:
    return [e.kind for e in _events(db)]


def test_the_leader_and_a_worker_joining_are_told_once(db: Db) -> None:
    assert _kinds(db) == [events.LEADER_CHANGED, events.WORKER_JOINED]
    leader, joined = _events(db)
    assert (leader.worker, leader.detail) == ("dispatcher-1", "1")
    assert joined.worker == W
    db.scripts.leader("dispatcher-1", TTL)  # a renewal
    db.register(W)  # a beat of a registered worker
    assert len(_events(db)) == 2


def test_a_batch_of_acks_is_one_entry_with_every_task(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    db.client.hset(db.keys.task("a"), "ready", STARTED - 40)
    tokens = db.lease("a", "b")
    db.client.delete(db.keys.events)
    done = [Done(t, tokens[t], Q, FLOW, STARTED, b"r", name=f"name-{t}",
                 ready_ms=STARTED - 40 if t == "a" else 0) for t in ("a", "b")]
    db.scripts.ack(W, done, TTL, FINISHED)
    assert db.client.xlen(db.keys.events) == 2  # the tasks' entry, then the flow's
    a, b, flow = _events(db)
    assert (a.kind, a.task, a.name, a.queue, a.flow, a.worker) == (
        events.TASK_COMPLETED, "a", "name-a", Q, FLOW, W)
    assert (a.wait_ms, a.run_ms) == (40, FINISHED - STARTED)
    assert b.task == "b" and b.wait_ms is None  # no ready time known
    assert a.stream_id == b.stream_id
    assert (flow.kind, flow.flow, flow.state, flow.name, flow.count) == (
        events.FLOW_FINISHED, FLOW, "completed", "flow", 2)


def test_a_dependent_made_ready_gets_its_ready_time(db: Db) -> None:
    child, tokens = db.join()
    db.ack("a", tokens["a"], child)
    assert db.field(db.keys.task("c"), "ready") is None  # one upstream left
    db.ack("b", tokens["b"], child, finished_ms=FINISHED + 5)
    assert db.field(db.keys.task("c"), "ready") == str(FINISHED + 5)
    [lease] = [entry for entry in db.inbox() if entry.task_id == "c"] or [None]
    assert lease is None  # queued, not leased: the lease carries it once assigned
    db.lease("c")
    [entry] = [e for e in db.inbox() if e.task_id == "c"]
    assert entry.ready_ms == FINISHED + 5


def test_failures_retries_and_quarantines_name_the_task_and_the_error(db: Db) -> None:
    db.put_flow(3)
    db.put_task("r", retries=1)
    db.put_task("f")
    db.put_task("q")
    tokens = db.lease("r", "f", "q")
    db.client.delete(db.keys.events)
    error = codec.pack_error(ErrorInfo("ValueError", "bad\ninput", "Traceback ..."))
    db.fail("r", tokens["r"], error=error)
    db.fail("f", tokens["f"], "final", error=error)
    db.fail("q", tokens["q"], "quarantine", error=error)
    retried, failed, quarantined = [e for e in _events(db) if e.task]
    assert (retried.kind, retried.task, retried.name) == (events.TASK_RETRIED, "r", "name-r")
    assert retried.detail == "ValueError: bad\ninput"
    assert (failed.kind, failed.task) == (events.TASK_FAILED, "f")
    assert (quarantined.kind, quarantined.task) == (events.TASK_QUARANTINED, "q")
    assert failed.started_ms == STARTED


def test_reaping_tells_the_worker_and_each_task_quarantined(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", lost=2)
    db.put_task("b")
    tokens = db.lease("a", "b")
    db.client.delete(db.keys.events)
    db.reap(LeasedTask("a", Q, tokens["a"], started=True), LeasedTask("b", Q, tokens["b"]))
    quarantined, reaped = _events(db)
    assert (quarantined.kind, quarantined.task) == (events.TASK_QUARANTINED, "a")
    assert (reaped.kind, reaped.worker, reaped.count, reaped.lost) == (
        events.WORKER_REAPED, W, 1, 1)


def test_marking_running_tells_started_and_dispatching_tells_the_lease(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    db.client.delete(db.keys.events)
    token = db.lease("a")["a"]
    db.scripts.mark_running(W, [("a", token)], [STARTED])
    dispatch, started = _events(db)
    assert (dispatch.kind, dispatch.queue, dispatch.count, dispatch.via, dispatch.worker) == (
        events.DISPATCH, Q, 1, "dispatcher", W)
    assert (started.kind, started.task, started.started_ms) == (
        events.TASK_STARTED, "a", STARTED)


def test_task_events_off_leaves_only_the_cluster_kinds(db: Db) -> None:
    quiet = Scripts(db.client, db.keys, events.Config(tasks=False))
    db.put_flow(3)
    child = Child("c", Q, 5.0)
    db.put_task("a", children=[child])
    db.put_task("b", children=[child])
    db.put_task("c", state="pending", upstream=2)
    db.client.delete(db.keys.events)
    n, *_ = quiet.assign(db.leader, W, Q, 10, 0, "1.9", ["a", "b"])
    assert n == 2
    tokens = {e.task_id: e.token for e in db.inbox()}
    quiet.ack(W, [Done(t, tokens[t], Q, FLOW, STARTED, b"", children=[child])
                  for t in ("a", "b")], TTL, FINISHED)
    assert db.state("c") == "pending" and db.queued() == {"c": 5.0}
    assert db.field(db.keys.task("c"), "ready") is None  # no per-task write either
    assert _kinds(db) == []  # no dispatch, no completions; the flow is not finished


def test_a_cancel_writes_one_entry_with_every_task_it_cancelled_and_the_flows_end(
        db: Db) -> None:
    from balancer.cancel import cancel_flow

    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    db.client.hset(db.keys.flow(FLOW), "tasks", codec.pack([["a", "a"], ["b", "b"]]))
    db.client.delete(db.keys.events)
    assert cancel_flow(db.client, db.keys, FLOW, TTL).cancelled == 2
    a, b, flow = _events(db)
    assert (a.kind, a.task, a.flow, a.queue, a.detail) == (
        events.TASK_CANCELLED, "a", FLOW, Q, "flow cancelled")
    assert b.task == "b" and a.stream_id == b.stream_id
    assert (flow.kind, flow.flow, flow.state) == (events.FLOW_FINISHED, FLOW, "cancelled")


def test_an_events_key_of_another_type_loses_the_events_and_nothing_else(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    db.client.delete(db.keys.events)
    db.client.set(db.keys.events, "written by hand")
    tokens = db.lease("a")
    assert db.scripts.ack(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"r")], TTL,
                          FINISHED) == [True]
    assert db.client.hget(db.keys.task("a"), "state") == b"completed"
    assert db.client.get(db.keys.events) == b"written by hand"
