"""ack.lua: a worker stores results (in batches), queues dependents, settles flows,
wakes the dispatcher when a refill is due, and takes its next inbox entries.
"""

from __future__ import annotations

import pytest
from balancer.common import codec, signals
from balancer.common.scripts import FAIL_FAILED, Child, Done, LeasedTask

from tests.common.lua.db import FINISHED, FLOW, NEVER, STARTED, TTL, Db, Q, W, take_batch


def test_ack_stores_the_result_and_frees_the_slot(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", timeout=30)
    token = db.lease("a")["a"]
    db.scripts.mark_running(W, [("a", token)])
    assert db.deadline("a", token) is not None
    assert db.ack("a", token, result=codec.pack({"r": 1}), has_deadline=True) is True
    record = db.client.hgetall(db.keys.task("a"))
    assert record[b"state"] == b"completed"
    assert codec.unpack(record[b"result"]) == {"r": 1}
    assert record[b"started"] == str(STARTED).encode()
    assert record[b"finished"] == str(FINISHED).encode()  # as the worker reckons it, not TIME
    assert db.client.hget(db.keys.flow(FLOW), "finished") is None  # one task of two
    assert (record[b"worker"], record[b"lease"]) == (W.encode(), token.encode())
    assert 0 < db.client.pttl(db.keys.task("a")) <= TTL
    assert db.leases() == set()
    assert db.inflight() == "0"
    assert db.deadlines() == set()
    assert db.wake() == [f"k|{W}|0"]
    assert db.flow("remaining") == "1"


def test_ack_accepts_a_task_never_marked_running(db: Db) -> None:
    # Short tasks are never marked: the worker pops the entry, runs it and acks.
    db.put_flow(1)
    db.put_task("a")
    token = db.lease("a")["a"]
    db.client.delete(db.keys.inbox(W))  # popped by the worker's fetch loop
    assert db.ack("a", token, result=b"ok", finished_ms=STARTED + 7) is True
    record = db.task("a")
    assert (record["state"], record["result"], record["finished"]) == (
        "completed", "ok", str(STARTED + 7))
    assert (record["worker"], record["lease"]) == (W, token)


def test_ack_removes_only_the_deadline_member_of_its_own_lease(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", timeout=5)
    db.put_task("b", timeout=5)
    tokens = db.lease("a", "b")
    stale = f"a|w0|{tokens['a']}"  # same id and token, another worker: not this lease
    db.client.zadd(db.keys.deadlines, {stale: 1})
    assert db.ack("a", tokens["a"], has_deadline=True)
    assert db.deadlines() == {stale, f"b|{W}|{tokens['b']}"}


def test_ack_of_a_batch_frees_slots_per_queue_settles_per_flow_and_signals_once(
        db: Db) -> None:
    db.put_flow(2, flow="f1")
    db.put_flow(1, flow="f2")
    db.put_task("a", flow="f1")
    db.put_task("b", flow="f1", queue="other")
    db.put_task("c", flow="f2")
    tokens = db.lease("a", "c")
    tokens |= db.lease("b", queue="other", prefix="1.2")
    stored = db.scripts.ack(W, [
        Done("a", tokens["a"], Q, "f1", STARTED, b"ra"),
        Done("b", tokens["b"], "other", "f1", STARTED, b"rb"),
        Done("c", tokens["c"], Q, "f2", STARTED, b"rc"),
    ], TTL, FINISHED)
    assert stored == [True, True, True]
    assert {t: db.task(t)["result"] for t in "abc"} == {"a": "ra", "b": "rb", "c": "rc"}
    assert (db.inflight(), db.inflight("other")) == ("0", "0")
    for flow in ("f1", "f2"):
        assert (db.flow("state", flow), db.flow("remaining", flow)) == ("completed", "0")
        assert db.client.lrange(db.keys.flow_done(flow), 0, -1) == [b"completed"]
    assert db.wake() == [f"k|{W}|0"]
    signal = signals.parse(db.client.lindex(db.keys.wake, 0))  # type: ignore[arg-type]
    assert signal == signals.Signal(signals.ACK, worker=W, leased=0, queued=False)


def test_ack_in_a_batch_refuses_only_the_entries_whose_lease_moved_on(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    untouched = db.task("b")
    stored = db.scripts.ack(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok"),
                                Done("b", "1.1.99", Q, FLOW, STARTED, b"stale")],
                            TTL, FINISHED)
    assert stored == [True, False]
    assert db.state("a") == "completed"
    assert db.task("b") == untouched
    assert db.leases() == {f"b|{tokens['b']}"}
    assert (db.inflight(), db.flow("remaining")) == ("1", "1")
    assert db.wake() == [f"k|{W}|1"]


def test_ack_and_take_hands_over_the_next_inbox_entries_in_the_same_call(db: Db) -> None:
    db.put_flow(3)
    for t in "abc":
        db.put_task(t)
    tokens = db.lease("a", "b", "c")
    db.client.lpop(db.keys.inbox(W))  # the worker fetched "a" and ran it

    stored, taken = db.scripts.ack_and_take(
        W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok")], TTL, FINISHED, 1)
    assert stored == [True]
    assert db.state("a") == "completed"
    assert [signals.parse_lease(raw).task_id for raw in taken] == ["b"]  # type: ignore[union-attr]
    assert [lease.task_id for lease in db.inbox()] == ["c"]
    assert db.leases() == {f"b|{tokens['b']}", f"c|{tokens['c']}"}  # still leased, not lost


def test_ack_and_take_drops_an_inbox_entry_without_its_lease(db: Db) -> None:
    db.put_flow(2)
    for t in "ab":
        db.put_task(t)
    tokens = db.lease("a", "b")
    db.client.lpop(db.keys.inbox(W))
    raw_b = db.client.lpop(db.keys.inbox(W))
    forged = raw_b.replace(tokens["b"].encode(), b"9.9.9")  # type: ignore[union-attr]
    db.client.rpush(db.keys.inbox(W), forged, raw_b)  # a writer to Redis pushed one more

    stored, taken = db.scripts.ack_and_take(
        W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok")], TTL, FINISHED, 2)
    assert stored == [True]
    assert taken == [raw_b]  # the forged entry is gone, not handed to the worker
    assert db.client.llen(db.keys.inbox(W)) == 0


def test_a_batch_taken_with_the_ack_records_the_leases_after_its_first_as_not_started(
        db: Db) -> None:
    tokens, batch = take_batch(db)
    assert [lease.task_id for lease in batch] == ["b", "c", "d"]
    assert db.client.hgetall(db.keys.ahead(W)) == {
        b"0": f"c|{tokens['c']} d|{tokens['d']}".encode()}
    assert signals.parse_ahead(db.client.hvals(db.keys.ahead(W))) == [
        ("c", tokens["c"]), ("d", tokens["d"])]


def test_a_single_lease_taken_with_the_ack_records_nothing_ahead(db: Db) -> None:
    db.put_flow(2)
    for t in "ab":
        db.put_task(t)
    tokens = db.lease("a", "b")
    db.client.lpop(db.keys.inbox(W))
    db.scripts.ack_and_take(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok")], TTL,
                            FINISHED, 3, ahead="0")
    assert db.client.exists(db.keys.ahead(W)) == 0


def test_ack_wakes_the_dispatcher_only_once_the_worker_is_down_to_its_refill_point(
        db: Db) -> None:
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t)
    tokens = db.lease("a", "b", "c", "d")
    for t in "ab":  # 3 then 2 leases left: above the refill point of 2, no signal
        assert db.scripts.ack(W, [Done(t, tokens[t], Q, FLOW, STARTED, b"ok")], TTL,
                              FINISHED, quiet_above=2) == [True]
    assert db.wake() == [f"k|{W}|2"]  # the second ack left 2: due a refill
    db.client.delete(db.keys.wake)
    assert db.scripts.ack(W, [Done("c", tokens["c"], Q, FLOW, STARTED, b"ok")], TTL,
                          FINISHED, quiet_above=2) == [True]
    assert db.wake() == [f"k|{W}|1"]


def test_below_the_refill_point_acks_signal_at_halving_checkpoints_not_at_every_ack(
        db: Db) -> None:
    ids = [f"t{i}" for i in range(10)]
    db.put_flow(len(ids))
    for t in ids:
        db.put_task(t)
    tokens = db.lease(*ids)
    signalled = []
    for t in ids[:7]:  # one at a time: 9, 8, ..., 3 held
        db.scripts.ack(W, [Done(t, tokens[t], Q, FLOW, STARTED, b"ok")], TTL, FINISHED,
                       quiet_above=8)
        signalled += [int(s.split("|")[2]) for s in db.wake()]
        db.client.delete(db.keys.wake)
    assert signalled == [8, 4]  # the refill point, then half of it
    # A batch that jumps over a checkpoint (3 -> 0 passes 2 and 1) signals once.
    done = [Done(t, tokens[t], Q, FLOW, STARTED, b"ok") for t in ids[7:]]
    db.scripts.ack(W, done, TTL, FINISHED, quiet_above=8)
    assert db.wake() == [f"k|{W}|0"]


def test_a_quiet_ack_still_wakes_the_dispatcher_when_it_queued_a_dependent(db: Db) -> None:
    db.put_flow(5)
    child = Child("c", Q, 5.0)
    db.put_task("a", children=[child])
    db.put_task("c", state="pending", upstream=1)
    for t in "xyz":
        db.put_task(t)
    tokens = db.lease("a", "x", "y", "z")
    assert db.scripts.ack(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"ok", False, [child])],
                          TTL, FINISHED, quiet_above=2) == [True]
    assert db.queued() == {"c": 5.0}
    assert db.wake() == [f"k|{W}|3", f"s|{Q}"]  # 3 held is above 2, but "c" is new work


def test_an_ack_to_an_idle_dispatcher_wakes_it_only_when_it_queued_a_dependent(
        db: Db) -> None:
    db.put_flow(3)
    child = Child("c", Q, 5.0)
    db.put_task("a", children=[child])
    db.put_task("b")
    db.put_task("c", state="pending", upstream=1)
    tokens = db.lease("a", "b")
    db.client.set(db.keys.idle, 1)
    assert db.ack("b", tokens["b"])
    assert db.wake() == []  # nothing queued anywhere: the freed slot needs no refill
    assert db.ack("a", tokens["a"], child)
    assert db.wake() == [f"k|{W}|0", f"s|{Q}"]  # "c" is new work, in queue Q
    db.client.delete(db.keys.idle, db.keys.wake)
    db.put_task("d")
    assert db.ack("d", db.lease("d")["d"])
    assert db.wake() == [f"k|{W}|0"]  # not idle: every slot freed is told


def test_ack_and_take_of_an_empty_inbox_takes_nothing(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    token = db.lease("a")["a"]
    db.client.lpop(db.keys.inbox(W))
    stored, taken = db.scripts.ack_and_take(
        W, [Done("a", token, Q, FLOW, STARTED, b"ok")], TTL, FINISHED, 2)
    assert (stored, taken) == ([True], [])


def test_ack_queues_a_dependent_exactly_when_its_last_upstream_completes(db: Db) -> None:
    db.put_flow(3)
    child = Child("c", "later", 5.0)
    db.put_task("a", children=[child])
    db.put_task("b", children=[child])
    db.put_task("c", state="pending", queue="later", upstream=2, score=1234.0)
    tokens = db.lease("a", "b")

    assert db.ack("a", tokens["a"], child)
    assert db.field(db.keys.task("c"), "deps") == "1"
    assert db.queued("later") == {}

    assert db.ack("b", tokens["b"], child)
    assert db.field(db.keys.task("c"), "deps") == "0"
    # Queued at the score the ack carries; its record stays "pending" with no unmet
    # dependency, which balancer/run.py reports as queued.
    assert db.queued("later") == {"c": 5.0}
    assert db.state("c") == "pending"


def test_ack_of_both_upstreams_in_one_batch_queues_the_dependent_once(db: Db) -> None:
    child, tokens = db.join()
    assert db.scripts.ack(W, [Done("a", tokens["a"], Q, FLOW, STARTED, b"", False, [child]),
                              Done("b", tokens["b"], Q, FLOW, STARTED, b"", False, [child])],
                          TTL, FINISHED) == [True, True]
    assert db.queued() == {"c": 5.0}
    assert db.field(db.keys.task("c"), "deps") == "0"
    assert db.flow("remaining") == "1"


def test_ack_never_queues_a_dependent_whose_other_upstream_failed(db: Db) -> None:
    child, tokens = db.join()
    assert db.fail("b", tokens["b"], "final") == FAIL_FAILED
    assert db.scripts.cascade("b", FLOW, b"upstream b failed", ["c"], TTL) == 1

    assert db.ack("a", tokens["a"], child)
    assert db.queued() == {}
    assert db.state("c") == "upstream_failed"
    assert int(db.field(db.keys.task("c"), "deps") or 0) >= NEVER - 1
    assert (db.flow("state"), db.flow("remaining")) == ("failed", "0")


def test_ack_replayed_by_the_same_lease_answers_true_and_changes_nothing(db: Db) -> None:
    child, tokens = db.join()
    assert db.ack("a", tokens["a"], child, result=b"first")
    before = db.task("a")
    # The reply was lost; the worker acks again: accepted, but counted once.
    assert db.ack("a", tokens["a"], child, result=b"second", finished_ms=FINISHED + 9)
    assert db.task("a") == before
    assert before["result"] == "first"
    assert db.field(db.keys.task("c"), "deps") == "1"
    assert db.queued() == {}
    assert (db.flow("remaining"), db.inflight()) == ("2", "1")
    assert db.wake() == [f"k|{W}|1"]


def test_ack_of_a_lease_that_moved_on_is_refused(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a")
    old = db.lease("a")["a"]
    db.reap(LeasedTask("a", Q, old, started=True))  # w1 presumed dead
    db.register("w2")
    new = db.lease("a", worker="w2", prefix="1.2")["a"]
    assert new != old

    assert db.ack("a", old, result=b"late") is False
    assert db.state("a") == "queued"  # leased to w2, not marked running
    assert "result" not in db.task("a")
    assert db.leases("w2") == {f"a|{new}"}
    assert db.ack("a", new, worker="w2", result=b"ok") is True
    # Once the new lease completed, the old one is still refused, not taken for a replay.
    assert db.ack("a", old, result=b"late") is False
    record = db.task("a")
    assert (record["result"], record["worker"], record["lease"]) == ("ok", "w2", new)
    assert db.flow("remaining") == "0"


@pytest.mark.parametrize(("who", "token"), [(W, "1.1.2"), (W, "9.9.1"), ("w2", "1.1.1")],
                         ids=["sibling-token", "unknown-token", "other-worker"])
def test_ack_by_a_caller_that_does_not_hold_the_lease_is_refused(
        db: Db, who: str, token: str) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    assert db.lease("a", "b") == {"a": "1.1.1", "b": "1.1.2"}
    record = db.task("a")
    assert db.ack("a", token, worker=who, result=b"late") is False
    assert db.task("a") == record
    assert record["state"] == "queued"
    assert db.leases() == {"a|1.1.1", "b|1.1.2"}
    assert (db.inflight(), db.flow("remaining")) == ("2", "2")
    assert db.wake() == []


def test_last_ack_of_a_flow_settles_it_and_pushes_the_state(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    db.ack("a", tokens["a"])
    assert db.flow("state") == "running"
    assert db.client.llen(db.keys.flow_done(FLOW)) == 0

    db.ack("b", tokens["b"])
    flow = db.client.hgetall(db.keys.flow(FLOW))
    assert (flow[b"state"], flow[b"remaining"]) == (b"completed", b"0")
    assert flow[b"finished"] == str(FINISHED).encode()  # when its last task finished
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"completed"]
    assert 0 < db.client.pttl(db.keys.flow_done(FLOW)) <= TTL
    assert 0 < db.client.pttl(db.keys.flow(FLOW)) <= TTL


def test_flow_with_a_failed_task_settles_failed_on_its_last_ack(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    assert db.fail("a", tokens["a"], "final") == FAIL_FAILED
    assert db.flow("state") == "running"
    db.ack("b", tokens["b"])
    assert (db.flow("state"), db.flow("failed")) == ("failed", "1")
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"failed"]


@pytest.mark.parametrize("field", ["remaining", "failed"])
def test_ack_ends_a_flow_whose_count_is_no_number_as_failed_and_still_stores_the_result(
        db: Db, field: str) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    db.client.hset(db.keys.flow(FLOW), field, "x")
    assert db.ack("a", tokens["a"], result=b"ok") is True  # not refused: stored
    assert db.ack("b", tokens["b"], result=b"ok") is True
    assert db.task("a")["state"] == db.task("b")["state"] == "completed"
    assert (db.flow("state"), db.flow("broken")) == ("failed", field)
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"failed"]  # once


def test_a_count_of_leases_that_is_no_number_refuses_no_acknowledgement(db: Db) -> None:
    """A worker retries a refused acknowledgement for ever: a count a Redis writer broke
    is left as it is (the dispatcher reports it) instead of failing the script."""
    from balancer.common.scripts import FAIL_FAILED

    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    db.client.hset(db.keys.inflight, Q, "garbage")
    assert db.ack("a", tokens["a"]) is True
    assert db.fail("b", tokens["b"], "final") == FAIL_FAILED
    assert (db.state("a"), db.state("b"), db.inflight()) == ("completed", "failed", "garbage")


def test_an_ack_whose_dependent_cannot_enter_its_queue_parks_it_instead_of_stopping(
        db: Db) -> None:
    """The dependent's queue is a key of another type (written by hand): the ack is
    applied whole and the dependent waits in the delayed set (promote.lua queues it once
    the key is fixed). Before, the script stopped at that ZADD: the task completed, its
    lease gone, its dependent in no queue, for good."""
    db.put_flow(2)
    child = Child("c", "broken", 5.0)
    db.put_task("a", children=[child])
    db.put_task("c", state="pending", queue="broken", upstream=1)
    db.client.set(db.keys.queue("broken"), "a string, not a queue")
    tokens = db.lease("a")
    assert db.ack("a", tokens["a"], child) is True
    assert db.state("a") == "completed" and db.state("c") == "pending"
    assert db.client.zscore(db.keys.delayed, "c") is not None
    assert db.client.get(db.keys.queue("broken")) == b"a string, not a queue"


def test_an_ack_passes_over_a_dependent_whose_record_was_clobbered(db: Db) -> None:
    """A dependent whose record a Redis writer replaced (not a hash) could never run: the
    ack stores its task, unlocks the other dependent and counts the flow, instead of
    stopping at that record with the lease gone and nothing after it done."""
    db.put_flow(3)
    clobbered, fine = Child("x", Q, 5.0), Child("y", Q, 6.0)
    db.put_task("a", children=[clobbered, fine])
    db.put_task("y", state="pending", upstream=1)
    db.client.set(db.keys.task("x"), "not a task record")
    tokens = db.lease("a")
    assert db.ack("a", tokens["a"], clobbered, fine) is True
    assert db.state("a") == "completed" and db.queued() == {"y": 6.0}
    assert db.flow("remaining") == "2"
    assert db.client.get(db.keys.task("x")) == b"not a task record"
