"""reap.lua (and the reaper that calls it): a dead worker's leases go back to their
queues; a loss is counted for what it had started.
"""

from __future__ import annotations

from balancer.common import signals
from balancer.common.scripts import FAIL_RETRIED, Child, LeasedTask
from balancer.common.settings import Settings

from tests.common.lua.db import FINISHED, POISON, TTL, Db, Q, W, take_batch


def _reap(db: Db, settings: Settings) -> tuple[int, int, list[str]]:
    from balancer.upkeep import Upkeep

    upkeep = Upkeep(db.client, db.keys, db.scripts,
                    settings.replace(namespace=db.keys.namespace))
    return upkeep.reap(db.leader, W, 0)


def test_the_reaper_counts_a_loss_for_a_batchs_first_lease_and_makes_the_rest_suspects(
        db: Db, settings: Settings) -> None:
    take_batch(db)  # "b" ran first (its result not stored); "c" or "d" may be running
    requeued, dead, ids = _reap(db, settings)
    assert (requeued, dead, sorted(ids)) == (3, 0, ["b", "c", "d"])
    assert [db.field(db.keys.task(t), "lost") for t in "bcd"] == ["1", "0", "0"]
    assert [db.field(db.keys.task(t), "suspect") for t in "bcd"] == [None, "1", "1"]
    assert db.client.exists(db.keys.ahead(W)) == 0
    tokens = db.lease("b", "c")  # leased again, a suspect's token asks for its start
    assert not tokens["b"].endswith("!") and tokens["c"].endswith("!")


def test_a_suspect_whose_start_was_told_counts_a_loss_when_its_worker_dies(
        db: Db, settings: Settings) -> None:
    db.put_flow(3)
    for t in "efg":
        db.put_task(t)
    db.client.hset(db.keys.task("f"), "suspect", 1)
    db.lease("e", "f", "g")
    _, taken = db.scripts.ack_and_take(W, [], TTL, FINISHED, 3, ahead="0")
    batch = [lease for lease in map(signals.parse_lease, taken) if lease]
    assert [(lease.task_id, lease.suspect) for lease in batch] == [
        ("e", False), ("f", True), ("g", False)]
    db.scripts.note_ahead(W, "0", signals.ahead_value(batch[2:]))  # the child starts "f"
    _reap(db, settings)
    assert [db.field(db.keys.task(t), "lost") for t in "efg"] == ["1", "1", "0"]


def test_reap_requeues_waiting_and_running_tasks_of_a_dead_worker(db: Db) -> None:
    db.put_flow(2)
    db.put_task("held", score=1.0)
    db.put_task("busy", score=2.0, timeout=60)
    tokens = db.lease("busy", "held")
    db.client.lpop(db.keys.inbox(W))  # the worker popped "busy"; "held" waits in the inbox
    cutoff = db.now_ms() + 1_000  # the heartbeat is older than this
    assert db.deadlines() == {f"busy|{W}|{tokens['busy']}"}

    assert db.reap(LeasedTask("held", Q, tokens["held"]),
                   LeasedTask("busy", Q, tokens["busy"], started=True),
                   seen_before_ms=cutoff) == (2, 0)
    assert db.queued() == {"held": 1.0, "busy": 2.0}
    held, busy = db.task("held"), db.task("busy")
    assert (held["state"], held["lost"]) == ("queued", "0")
    assert (busy["state"], busy["lost"]) == ("queued", "1")
    for record in (held, busy):
        assert "worker" not in record
        assert "lease" not in record
    assert db.inflight() == "0"
    assert db.deadlines() == set()
    assert not db.client.exists(db.keys.worker(W), db.keys.inbox(W), db.keys.leases(W))
    assert db.client.zscore(db.keys.workers, W) is None
    assert db.flow("remaining") == "2"


def test_reap_quarantines_a_running_task_at_the_poison_threshold(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", lost=POISON - 1, children=[Child("b", Q, 1.0)])
    db.put_task("b", state="pending", upstream=1)
    token = db.lease("a")["a"]
    db.scripts.mark_running(W, [("a", token)])

    assert db.reap(LeasedTask("a", Q, token, started=True)) == (0, 1)
    record = db.task("a")
    assert (record["state"], record["lost"], record["error"]) == (
        "dead", str(POISON), "quarantined")
    assert "worker" not in record
    assert db.leases() == set()
    assert db.client.zscore(db.keys.dlq, "a") is not None
    assert db.queued() == {}
    assert db.inflight() == "0"
    # It waits in the dlq: its flow and its dependents are left as they are.
    assert db.state("b") == "pending"
    assert db.flow("remaining") == "2"


def test_reap_never_quarantines_a_task_that_was_only_waiting(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", lost=5)
    token = db.lease("a")["a"]
    assert db.reap(LeasedTask("a", Q, token, started=False), threshold=1) == (1, 0)
    assert (db.state("a"), db.field(db.keys.task("a"), "lost")) == ("queued", "5")


def test_reap_refuses_when_the_worker_heartbeat_is_newer_than_the_cutoff(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    cutoff = db.now_ms() - 60_000  # the heartbeat came after this
    record = db.task("a")
    assert db.reap(LeasedTask("a", Q, token), seen_before_ms=cutoff) == (-2, 0)
    assert db.task("a") == record
    assert (db.queued(), db.leases(), db.inflight()) == ({}, {f"a|{token}"}, "1")
    assert db.client.exists(db.keys.worker(W), db.keys.inbox(W), db.keys.leases(W)) == 3
    assert db.client.zscore(db.keys.workers, W) is not None


def test_reap_without_a_cutoff_takes_back_a_worker_that_deregistered(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    # Its heartbeat is fresh, but it said it is gone (x|worker): reap regardless.
    assert db.reap(LeasedTask("a", Q, token), seen_before_ms=0) == (1, 0)
    assert db.queued() == {"a": 1000.0}
    assert db.client.zscore(db.keys.workers, W) is None


def test_reap_refuses_a_wrong_leader_token(db: Db) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    record = db.task("a")
    assert db.reap(LeasedTask("a", Q, token), leader="7|other") == (-1, 0)
    assert db.task("a") == record
    assert (db.queued(), db.leases(), db.inflight()) == ({}, {f"a|{token}"}, "1")
    assert db.client.exists(db.keys.inbox(W), db.keys.leases(W)) == 2


def test_reap_leaves_a_task_leased_again_since(db: Db) -> None:
    db.put_task("a")
    old = db.lease("a")["a"]
    assert db.reap(LeasedTask("a", Q, old, started=True)) == (1, 0)
    db.register("w2")
    new = db.lease("a", worker="w2", prefix="1.2")["a"]
    db.register(W)  # the presumed-dead worker comes back and is reaped again
    assert db.reap(LeasedTask("a", Q, old, started=True)) == (0, 0)
    record = db.task("a")
    assert (record["state"], record["lost"]) == ("queued", "1")
    assert "worker" not in record
    assert db.queued() == {}
    assert db.leases("w2") == {f"a|{new}"}
    assert db.inflight() == "1"


def test_reap_leaves_a_task_its_worker_acknowledged_after_the_snapshot(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a")
    db.put_task("b")
    tokens = db.lease("a", "b")
    snapshot = [LeasedTask(t, Q, tokens[t], started=True) for t in ("a", "b")]
    assert db.ack("a", tokens["a"], result=b"ok")  # between the snapshot and the reap
    completed = db.task("a")
    assert db.reap(*snapshot) == (1, 0)
    assert db.task("a") == completed
    assert completed["state"] == "completed"
    assert db.queued() == {"b": 1000.0}
    assert db.inflight() == "0"
    assert (db.flow("remaining"), db.field(db.keys.task("b"), "lost")) == ("1", "1")


def test_reap_leaves_a_task_its_worker_failed_after_the_snapshot(db: Db) -> None:
    db.put_flow(2)
    db.put_task("r", retries=1, retry_delay=60.0)
    db.put_task("c")
    tokens = db.lease("r", "c")
    snapshot = [LeasedTask(t, Q, tokens[t], started=True) for t in ("r", "c")]
    assert db.fail("r", tokens["r"]) == FAIL_RETRIED
    assert db.fail("c", tokens["c"], "crash") == FAIL_RETRIED
    records = {t: db.task(t) for t in "rc"}
    assert db.reap(*snapshot) == (0, 0)
    assert {t: db.task(t) for t in "rc"} == records
    assert (records["r"]["state"], records["c"]["lost"]) == ("retrying", "1")
    assert db.queued() == {"c": 1000.0}
    assert db.inflight() == "0"


def test_reap_removes_only_the_dead_worker_s_deadline_members(db: Db) -> None:
    db.put_task("a", timeout=5)
    db.put_task("b", timeout=5)
    db.register("w2")
    mine = db.lease("a")["a"]
    theirs = db.lease("b", worker="w2", prefix="1.2")["b"]
    assert db.reap(LeasedTask("a", Q, mine, started=True)) == (1, 0)
    assert db.deadlines() == {f"b|w2|{theirs}"}
    assert db.leases("w2") == {f"b|{theirs}"}
