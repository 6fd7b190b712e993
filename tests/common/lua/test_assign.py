"""assign.lua: the dispatcher leases queued tasks into a worker's inbox, within its
free places, counting the leases of queues with a limit.
"""

from __future__ import annotations

from balancer.common import codec
from balancer.common.scripts import FAIL_RETRIED, Child, LeasedTask

from tests.common.lua.db import FLOW, GRACE, Db, Q, W


def test_assign_moves_ids_into_the_inbox_as_entries_carrying_the_spec(db: Db) -> None:
    db.put_task("a", score=1.0, children=[Child("c", "other", 9.0)])
    db.put_task("b", score=2.0, timeout=2.5)
    records = {t: db.task(t) for t in "ab"}
    # b has a timeout, so one deadline is set
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "3.7", ["a", "b"]) == (2, 2, 0, 1)
    assert db.queued() == {}
    a, b = db.inbox()
    assert (a.task_id, a.token, b.task_id, b.token) == ("a", "3.7.1", "b", "3.7.2")
    assert (a.queue, a.flow, a.fn, a.name) == (Q, FLOW, "tests.tasks:fn", "name-a")
    assert codec.decode_call(a.args) == ([1], {})
    assert codec.unpack(a.children) == [["c", "other", 9.0]]
    assert (a.timeout, b.timeout) == (None, 2.5)
    assert db.leases() == {"a|3.7.1", "b|3.7.2"} == {a.member, b.member}
    assert db.inflight() == "2"
    # The records are not written: the members are the leases, and the tasks still read
    # "queued" with no worker or lease field; only their absence from the queue tells.
    assert {t: db.task(t) for t in "ab"} == records
    for record in records.values():
        assert record["state"] == "queued"
        assert "worker" not in record
        assert "lease" not in record


def test_assign_leaves_a_ready_dependent_pending_with_no_unmet_dependency(db: Db) -> None:
    # ack.lua queued it without touching its state; assign does not touch it either.
    db.put_task("c", state="pending", upstream=0)
    db.client.zadd(db.keys.queue(Q), {"c": 5.0})
    token = db.lease("c")["c"]
    record = db.task("c")
    assert (record["state"], record["deps"]) == ("pending", "0")
    assert "lease" not in record
    assert db.queued() == {}
    assert db.leases() == {f"c|{token}"}


def test_assign_counts_leases_already_held_against_capacity(db: Db) -> None:
    for i, t in enumerate("abcd"):
        db.put_task(t, score=float(i))
    db.lease("a")
    assert db.scripts.assign(db.leader, W, Q, 3, GRACE, "1.2", ["b", "c", "d"]) == (2, 3, 0, 0)
    assert db.queued() == {"d": 3.0}
    assert db.state("d") == "queued"
    # Full: nothing more until a slot frees.
    assert db.scripts.assign(db.leader, W, Q, 3, GRACE, "1.3", ["d"]) == (0, 3, 0, 0)
    assert db.queued() == {"d": 3.0}
    assert db.inflight() == "3"
    assert len(db.inbox()) == 3


def test_assign_of_an_empty_batch_reports_the_leases_held(db: Db) -> None:
    db.put_task("a")
    db.lease("a")
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.2", []) == (0, 1, 0, 0)


def test_assign_skips_ids_no_longer_in_the_queue(db: Db) -> None:
    db.put_task("a")
    first = db.lease("a")
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.2", ["a"]) == (0, 1, 0, 0)
    assert db.leases() == {f"a|{first['a']}"}
    assert [lease.token for lease in db.inbox()] == [first["a"]]
    assert db.inflight() == "1"


def test_assign_walks_the_ids_in_order_to_fill_the_free_slots(db: Db) -> None:
    # "gone" has a record but left the queue (leased elsewhere): skipped, no slot taken.
    db.put_task("gone", state="pending")
    for i, t in enumerate("abc"):
        db.put_task(t, score=float(i))
    assert db.scripts.assign(db.leader, W, Q, 2, GRACE, "1.4",
                             ["gone", "a", "b", "c"]) == (2, 2, 0, 0)
    assert [(lease.task_id, lease.token) for lease in db.inbox()] == [
        ("a", "1.4.1"), ("b", "1.4.2")]
    assert db.leases() == {"a|1.4.1", "b|1.4.2"}
    assert db.queued() == {"c": 2.0}
    assert db.state("gone") == "pending"
    assert db.inflight() == "2"


def test_assign_with_one_free_slot_drops_a_ghost_and_leases_the_next_id(db: Db) -> None:
    db.put_task("a")
    db.client.zadd(db.keys.queue(Q), {"ghost": 0})
    assert db.scripts.assign(db.leader, W, Q, 1, GRACE, "1.6", ["ghost", "a"]) == (1, 1, 1, 0)
    assert db.queued() == {}
    assert db.leases() == {"a|1.6.1"}
    assert [lease.task_id for lease in db.inbox()] == ["a"]
    assert db.inflight() == "1"


def test_assign_stops_at_the_free_slots_before_a_ghost_past_them(db: Db) -> None:
    db.put_task("a", score=1.0)
    db.client.zadd(db.keys.queue(Q), {"ghost": 2.0})
    assert db.scripts.assign(db.leader, W, Q, 1, GRACE, "1.6", ["a", "ghost"]) == (1, 1, 0, 0)
    assert db.queued() == {"ghost": 2.0}
    assert db.leases() == {"a|1.6.1"}


def test_assign_drops_a_queued_id_whose_task_record_is_gone(db: Db) -> None:
    db.put_task("a")
    db.client.zadd(db.keys.queue(Q), {"ghost": 0})
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.5", ["ghost", "a"]) == (1, 1, 1, 0)
    assert db.queued() == {}
    [entry] = db.inbox()
    assert (entry.task_id, entry.token) == ("a", "1.5.1")
    assert db.leases() == {"a|1.5.1"}
    assert not db.client.exists(db.keys.task("ghost"))
    assert db.inflight() == "1"


def test_assign_refuses_a_wrong_leader_token(db: Db) -> None:
    db.put_task("a")
    assert db.scripts.assign("99|impostor", W, Q, 4, GRACE, "99.1", ["a"]) == (-1, 0, 0, 0)
    assert db.queued() == {"a": 1000.0}
    assert db.state("a") == "queued"
    assert not db.client.exists(db.keys.inbox(W), db.keys.leases(W), db.keys.inflight)


def test_assign_sets_a_deadline_only_for_tasks_with_a_timeout(db: Db) -> None:
    db.put_task("slow", timeout=2.5)
    db.put_task("free")
    before = db.now_ms()
    tokens = db.lease("slow", "free")
    deadline = db.deadline("slow", tokens["slow"])
    assert deadline is not None
    assert before + 2_500 + GRACE <= deadline <= db.now_ms() + 2_500 + GRACE
    assert db.deadlines() == {f"slow|{W}|{tokens['slow']}"}


def test_assign_names_the_worker_and_the_lease_in_each_deadline_member(db: Db) -> None:
    db.put_task("a", timeout=1)
    db.put_task("b", timeout=1)
    db.register("w2")
    assert db.lease("a") == {"a": "1.1.1"}
    assert db.lease("b", worker="w2", prefix="1.2") == {"b": "1.2.1"}
    assert db.deadlines() == {f"a|{W}|1.1.1", "b|w2|1.2.1"}


def test_assign_counts_inflight_per_queue(db: Db) -> None:
    db.put_task("a")
    db.put_task("b")
    db.put_task("x", queue="other")
    db.lease("a", "b")
    db.lease("x", queue="other", prefix="1.2")
    assert (db.inflight(), db.inflight("other")) == ("2", "1")
    assert {lease.queue for lease in db.inbox()} == {Q, "other"}


def test_assign_reports_how_many_deadlines_it_set(db: Db) -> None:
    db.put_task("slow", timeout=2.5)
    db.put_task("free", score=1.0)
    assert db.scripts.assign(db.leader, W, Q, 4, GRACE, "1.9", ["slow", "free"]) == (2, 2, 0, 1)


def test_leases_of_a_queue_without_a_limit_are_not_counted_anywhere(db: Db) -> None:
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t, retries=1)
    tokens = db.lease("a", "b", "c", "d", prefix="1.1u")
    assert all("u" in token for token in tokens.values())
    assert db.inflight() is None
    assert db.ack("a", tokens["a"]) is True
    assert db.fail("b", tokens["b"]) == FAIL_RETRIED
    assert db.scripts.release(W, [LeasedTask("c", Q, tokens["c"])]) == 1
    assert db.reap(LeasedTask("d", Q, tokens["d"], started=True)) == (1, 0)
    assert db.inflight() is None  # never written, never decremented below zero


def test_counted_and_uncounted_leases_keep_the_count_of_the_counted_ones(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b", score=1.0)
    counted = db.lease("a", prefix="1.1")
    uncounted = db.lease("b", prefix="1.2u")
    assert db.inflight() == "1"
    assert db.ack("b", uncounted["b"]) is True
    assert db.inflight() == "1"
    assert db.ack("a", counted["a"]) is True
    assert db.inflight() == "0"


def test_a_worker_above_its_refill_point_gets_no_lease_however_the_caller_counted(
        db: Db) -> None:
    db.put_flow(3)
    for t in "abc":
        db.put_task(t)
    db.client.sadd(db.keys.leases(W), *[f"x{i}|t" for i in range(10)])
    # 16 places, 10 held: 6 free, under the refill point of 8
    assert db.scripts.assign(db.leader, W, Q, 16, GRACE, "1.1u", ["a"], 8) == (0, 10, 0, 0)
    assert db.scripts.assign(db.leader, W, Q, 16, GRACE, "1.2u", ["a", "b"], 6) == (2, 12, 0, 0)
