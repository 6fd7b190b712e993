"""fail.lua: a failed run is retried, failed for good (cascading), requeued after a
crash or quarantined; a call for a lease that moved on changes nothing.
"""

from __future__ import annotations

import pytest
from balancer.common import signals
from balancer.common.scripts import (
    FAIL_FAILED,
    FAIL_QUARANTINED,
    FAIL_REFUSED,
    FAIL_RETRIED,
    Child,
    LeasedTask,
)

from tests.common.lua.db import FLOW, POISON, STARTED, TTL, Db, Q, W, strings


def test_fail_with_retries_left_schedules_a_retry(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=2, retry_delay=10.0, timeout=5)
    token = db.lease("a")["a"]
    assert db.deadline("a", token) is not None
    before = db.now_ms()
    assert db.fail("a", token) == FAIL_RETRIED
    after = db.now_ms()
    record = db.task("a")
    assert (record["state"], record["failures"], record["error"]) == ("retrying", "1", "boom")
    assert (record["started"], record["worker"], record["lease"]) == (str(STARTED), W, token)
    due = db.client.zscore(db.keys.delayed, "a")
    assert due is not None
    assert before + 10_000 <= due <= after + 10_000
    assert db.leases() == set()
    assert db.inflight() == "0"
    assert db.deadlines() == set()
    assert db.flow("remaining") == "1"
    assert db.client.llen(db.keys.cascade) == 0
    assert db.wake() == [f"k|{W}|0", "r"]  # the slot is free; a retry waits in delayed


def test_fail_backs_off_exponentially(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=5, retry_delay=10.0, failures=2)
    token = db.lease("a")["a"]
    before = db.now_ms()
    assert db.fail("a", token) == FAIL_RETRIED
    due = db.client.zscore(db.keys.delayed, "a")
    assert due is not None
    assert before + 40_000 <= due <= db.now_ms() + 40_000  # third failure: 10s * 2**2


@pytest.mark.parametrize("given, failures, mode, wait_s", [
    ("1,10,100,", 0, "retry", 1), ("1,10,100,", 1, "retry", 10), ("1,10,100,", 2, "retry", 100),
    ("1,10,100,", 4, "retry", 100),  # past the list: its last
    ("5,", 3, "retry", 5),  # a list of one: it does not double
    ("1,10,", 1, "again", 10),  # a RETRY signal waits its retry's delay too
    ("bogus", 0, "retry", 0), ("x,", 0, "retry", 0)])  # not a number: no wait, no error
def test_fail_waits_the_delay_a_list_of_retry_delays_gives_each_retry(
        db: Db, given: str, failures: int, mode: str, wait_s: float) -> None:
    db.put_flow(1)
    db.put_task("a", retries=5, retry_delay=given, failures=failures)
    token = db.lease("a")["a"]
    before = db.now_ms()
    assert db.fail("a", token, mode) == FAIL_RETRIED
    due = db.client.zscore(db.keys.delayed, "a")
    assert due is not None
    assert before + wait_s * 1000 <= due <= db.now_ms() + wait_s * 1000


def test_fail_without_retries_left_fails_cascades_and_settles_the_flow(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=1, failures=1, children=[Child("c", Q, 1.0)])
    token = db.lease("a")["a"]
    assert db.fail("a", token) == FAIL_FAILED
    record = db.task("a")
    assert (record["state"], record["failures"], record["error"]) == ("failed", "2", "boom")
    assert (record["worker"], record["lease"]) == (W, token)
    assert 0 < db.client.pttl(db.keys.task("a")) <= TTL
    assert db.client.zscore(db.keys.delayed, "a") is None
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["a"]
    assert db.wake() == [f"k|{W}|0", signals.CASCADE]
    flow = db.client.hgetall(db.keys.flow(FLOW))
    assert (flow[b"state"], flow[b"failed"], flow[b"remaining"]) == (b"failed", b"1", b"0")
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"failed"]


def test_fail_in_final_mode_fails_even_with_retries_left(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", retries=3)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "final", error=b"timeout") == FAIL_FAILED
    record = db.task("a")
    assert (record["state"], record["error"], record["worker"], record["lease"]) == (
        "failed", "timeout", W, token)
    # No dependents: nothing to cascade; the flow still has another task.
    assert db.client.llen(db.keys.cascade) == 0
    assert db.wake() == [f"k|{W}|0"]
    assert (db.flow("state"), db.flow("failed")) == ("running", "1")


def test_fail_replayed_by_the_same_lease_changes_nothing_more(db: Db) -> None:
    db.put_flow(3)
    db.put_task("r", retries=1)
    db.put_task("f")
    db.put_task("c", lost=0)
    tokens = db.lease("r", "f", "c")
    assert db.fail("r", tokens["r"]) == FAIL_RETRIED
    assert db.fail("f", tokens["f"]) == FAIL_FAILED
    assert db.fail("c", tokens["c"], "crash") == FAIL_RETRIED
    records = {t: db.task(t) for t in "rfc"}
    wake = db.wake()

    assert db.fail("r", tokens["r"]) == FAIL_RETRIED
    assert db.fail("f", tokens["f"]) == FAIL_FAILED
    assert db.fail("c", tokens["c"], "crash") == FAIL_RETRIED
    assert {t: db.task(t) for t in "rfc"} == records
    assert (records["r"]["failures"], records["f"]["failures"], records["c"]["lost"]) == (
        "1", "1", "1")
    assert {t: records[t]["lease"] for t in "rfc"} == tokens
    assert (db.flow("remaining"), db.flow("failed")) == ("2", "1")
    assert db.inflight() == "0"
    assert db.wake() == wake


def test_fail_in_crash_mode_replayed_after_quarantine_answers_quarantined(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", lost=POISON - 1)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "crash") == FAIL_QUARANTINED
    record = db.task("a")
    assert db.fail("a", token, "crash") == FAIL_QUARANTINED
    assert db.task("a") == record
    assert db.client.zcard(db.keys.dlq) == 1
    assert (db.field(db.keys.task("a"), "lost"), db.inflight()) == (str(POISON), "0")


def test_fail_of_a_lease_the_reaper_took_back_changes_nothing(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", retries=3)
    db.put_task("b", retries=3)
    tokens = db.lease("a", "b")
    db.scripts.mark_running(W, [("b", tokens["b"])])
    assert db.reap(*(LeasedTask(t, Q, tokens[t], started=True) for t in "ab")) == (2, 0)
    records = {t: db.task(t) for t in "ab"}
    db.client.delete(db.keys.wake)

    # "a" was never marked running: its record holds no lease, and the late fail is refused.
    assert db.fail("a", tokens["a"]) == FAIL_REFUSED
    assert db.fail("b", tokens["b"]) == FAIL_REFUSED
    assert {t: db.task(t) for t in "ab"} == records
    assert db.queued() == {"a": 1000.0, "b": 1000.0}
    assert db.client.zcard(db.keys.delayed) == 0
    assert (db.inflight(), db.flow("remaining"), db.flow("failed")) == ("0", "2", "0")
    assert db.wake() == []


def test_fail_of_a_lease_reaped_after_it_was_marked_running_is_refused(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=3)
    token = db.lease("a")["a"]
    db.scripts.mark_running(W, [("a", token)])
    assert db.reap(LeasedTask("a", Q, token, started=True)) == (1, 0)
    assert db.fail("a", token) == FAIL_REFUSED


def test_fail_replayed_after_the_task_was_leased_again_and_marked_answers_as_before(
        db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=1)
    old = db.lease("a")["a"]
    assert db.fail("a", old) == FAIL_RETRIED
    assert db.scripts.promote([("a", Q)]) == 1
    new = db.lease("a", prefix="1.2")["a"]
    assert db.scripts.mark_running(W, [("a", new)]) == 1
    assert db.fail("a", old) == FAIL_RETRIED


@pytest.mark.parametrize(("who", "token"), [(W, "1.1.9"), ("w2", "1.1.1")],
                         ids=["wrong-token", "other-worker"])
def test_fail_by_a_caller_that_does_not_hold_the_lease_is_refused(
        db: Db, who: str, token: str) -> None:
    db.put_flow(1)
    db.put_task("a", timeout=5)
    assert db.lease("a") == {"a": "1.1.1"}
    db.scripts.mark_running(W, [("a", "1.1.1")])
    record = db.task("a")
    assert db.fail("a", token, worker=who, error=b"late") == FAIL_REFUSED
    assert db.task("a") == record
    assert (record["state"], record["failures"], record["lease"]) == ("running", "0", "1.1.1")
    assert db.deadlines() == {f"a|{W}|1.1.1"}
    assert (db.inflight(), db.flow("remaining")) == ("1", "1")
    assert db.wake() == []


def test_fail_after_the_ack_is_refused(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=3)
    token = db.lease("a")["a"]
    assert db.ack("a", token, result=b"ok")
    assert db.fail("a", token) == FAIL_REFUSED
    assert db.fail("a", token, "crash") == FAIL_REFUSED
    assert (db.state("a"), db.field(db.keys.task("a"), "failures")) == ("completed", "0")
    assert db.client.zcard(db.keys.delayed) == 0


def test_fail_in_crash_mode_requeues_at_once_and_counts_a_loss(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", score=3.0, retries=0, timeout=5)
    token = db.lease("a")["a"]
    assert db.deadline("a", token) is not None
    assert db.fail("a", token, "crash", error=b"segfault") == FAIL_RETRIED
    record = db.task("a")
    assert (record["state"], record["lost"], record["error"]) == ("queued", "1", "segfault")
    assert "worker" not in record  # back in its queue: no worker holds it
    assert (record["lease"], record["started"]) == (token, str(STARTED))
    assert record["failures"] == "0"
    assert db.queued() == {"a": 3.0}
    assert db.leases() == set()
    assert db.deadlines() == set()
    assert db.inflight() == "0"
    assert db.flow("remaining") == "1"
    assert db.wake() == [f"k|{W}|0", f"s|{Q}"]  # the slot is free; "a" is back in Q


def test_fail_in_crash_mode_quarantines_at_the_poison_threshold(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", lost=POISON - 1)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "crash", error=b"segfault") == FAIL_QUARANTINED
    record = db.task("a")
    assert (record["state"], record["lost"], record["error"]) == ("dead", str(POISON), "segfault")
    assert "worker" not in record
    assert record["lease"] == token  # kept, so a replay answers as this call did
    assert db.client.zscore(db.keys.dlq, "a") is not None
    assert db.queued() == {}
    assert db.inflight() == "0"
    # Quarantined tasks stay in their flow until an operator retries or purges them.
    assert (db.flow("state"), db.flow("remaining")) == ("running", "1")
    assert db.client.llen(db.keys.flow_done(FLOW)) == 0


def test_a_crashed_task_whose_queue_is_of_another_type_is_parked_not_lost(db: Db) -> None:
    """Put back after a crash into a queue key of another type: it waits in the delayed
    set, queued, for promote.lua, instead of the script stopping with its lease gone."""
    db.put_flow(1)
    db.put_task("a")
    tokens = db.lease("a")
    db.client.set(db.keys.queue(Q), "a string, not a queue")
    assert db.fail("a", tokens["a"], "crash") == FAIL_RETRIED
    assert db.state("a") == "queued"
    assert db.client.zscore(db.keys.delayed, "a") is not None


def test_a_wake_list_of_another_type_loses_the_signal_not_the_task(db: Db) -> None:
    """fail.lua signals right after taking the lease back: a wake list a Redis writer
    clobbered stopped it there, the lease gone and the task in no queue, for good."""
    db.put_flow(1)
    db.put_task("a", retries=1)
    tokens = db.lease("a")
    db.client.delete(db.keys.wake)
    db.client.set(db.keys.wake, "a string, not a list")
    assert db.fail("a", tokens["a"], "retry") == FAIL_RETRIED
    assert db.state("a") == "retrying"
    assert db.client.zscore(db.keys.delayed, "a") is not None
