"""promote.lua: due retries go back to their queue."""

from __future__ import annotations

from balancer.common.aside import Aside
from balancer.common.scripts import FAIL_RETRIED
from balancer.common.settings import Settings

from tests.common.lua.db import Db, Q, strings


def test_promote_queues_only_due_retries(db: Db) -> None:
    db.put_flow(2)
    db.put_task("due", retries=1, retry_delay=0.0, score=7.0)
    db.put_task("later", retries=1, retry_delay=3600.0, score=8.0)
    tokens = db.lease("due", "later")
    assert db.fail("due", tokens["due"]) == FAIL_RETRIED
    assert db.fail("later", tokens["later"]) == FAIL_RETRIED

    assert db.scripts.promote([("due", Q), ("later", Q)]) == 1
    assert db.queued() == {"due": 7.0}
    assert (db.state("due"), db.state("later")) == ("queued", "retrying")
    assert strings(db.client.zrange(db.keys.delayed, 0, -1)) == ["later"]


def test_promoted_task_is_leased_with_a_new_token_that_fences_the_old_one(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=1)
    old = db.lease("a")["a"]
    assert db.fail("a", old) == FAIL_RETRIED
    assert db.scripts.promote([("a", Q)]) == 1
    new = db.lease("a", prefix="1.2")["a"]
    assert new != old
    record = db.task("a")
    # A replay of the old fail answers as its first call did, and changes nothing.
    assert db.fail("a", old) == FAIL_RETRIED
    assert db.ack("a", old) is False
    assert db.task("a") == record
    assert (record["state"], record["failures"]) == ("queued", "1")
    assert db.leases() == {f"a|{new}"}
    assert (db.client.zcard(db.keys.delayed), db.inflight()) == (0, "1")
    assert db.ack("a", new, result=b"ok") is True
    # A replay still answers as its first call did, and changes nothing of the new lease.
    assert db.fail("a", old, "final") == FAIL_RETRIED
    assert (db.state("a"), db.field(db.keys.task("a"), "lease")) == ("completed", new)


def test_promote_drops_a_due_entry_whose_task_is_no_longer_retrying(db: Db) -> None:
    db.put_task("a", state="failed")
    db.client.zadd(db.keys.delayed, {"a": 0})
    assert db.scripts.promote([("a", Q)]) == 0
    assert db.client.zcard(db.keys.delayed) == 0
    assert db.queued() == {}


def test_a_delayed_start_goes_to_its_queue_and_a_gated_one_to_the_gate_once_due(
        db: Db) -> None:
    db.put_flow(3)
    db.put_task("plain", state="scheduled", score=5.0)
    db.put_task("gated", state="scheduled")
    db.client.hset(db.keys.task("gated"), "gate", 1)
    db.put_task("later", state="scheduled", score=6.0)
    db.client.zadd(db.keys.delayed, {"plain": 0, "gated": 0, "later": 2**52})
    assert db.scripts.promote([("plain", Q), ("gated", Q), ("later", Q)]) == 2
    assert db.queued() == {"plain": 5.0}
    assert strings(db.client.zrange(db.keys.gate, 0, -1)) == ["gated"]
    assert (db.state("plain"), db.state("gated"), db.state("later")) == (
        "queued", "pending", "scheduled")
    assert strings(db.client.zrange(db.keys.delayed, 0, -1)) == ["later"]


def test_a_due_task_whose_queue_key_is_of_another_type_waits_until_it_is_fixed(
        db: Db) -> None:
    """Its queue refuses it (a key of another type, written by hand): it stays in the
    delayed set, due again a little later, as it was; the rest of the batch is queued, and
    once the key is fixed it is queued too. Nothing is set aside: the queue key is the
    bad entry (the dispatcher reports it), not the task."""
    from balancer.setaside import SetAside
    from balancer.upkeep import Upkeep

    db.put_flow(2)
    db.put_task("ok", state="retrying", score=3.0)
    db.put_task("stuck", state="retrying", queue="broken", score=4.0)
    db.client.set(db.keys.queue("broken"), "a string, not a sorted set")
    db.client.zadd(db.keys.delayed, {"stuck": 0, "ok": 1})
    upkeep = Upkeep(db.client, db.keys, db.scripts, Settings(namespace=db.keys.namespace),
                    SetAside(db.scripts, lambda: 0.0))
    seconds, micros = db.client.time()
    moved, next_due = upkeep.promote(now_ms=seconds * 1000 + micros / 1000)
    assert moved == 1
    assert db.queued() == {"ok": 3.0} and db.state("stuck") == "retrying"
    assert strings(db.client.zrange(db.keys.delayed, 0, -1)) == ["stuck"]
    assert db.client.zscore(db.keys.delayed, "stuck") > 0  # due again later
    # ... and the dispatcher is told when: it looks again then (told nothing, it never
    # did, and the task stayed parked once its queue was fixed).
    assert next_due == db.client.zscore(db.keys.delayed, "stuck")
    assert db.client.hlen(db.keys.aside) == 0
    db.client.delete(db.keys.queue("broken"))  # the operator fixes it
    db.client.zadd(db.keys.delayed, {"stuck": 0})  # its time comes again
    assert upkeep.promote(now_ms=10.0**13)[0] == 1
    assert db.client.zrange(db.keys.queue("broken"), 0, -1, withscores=True) == [
        (b"stuck", 4.0)]
    assert db.state("stuck") == "queued" and db.client.zcard(db.keys.delayed) == 0


def test_a_task_parked_by_a_script_goes_to_its_queue_or_the_gate_keeping_its_state(
        db: Db) -> None:
    """A task an ack or a requeue parked (its queue was of another type then) is queued,
    or gated, as that script would have, once due: its state stays as the script left it."""
    db.put_flow(3)
    db.put_task("requeued", state="queued", score=7.0)
    db.put_task("dependent", state="pending", score=8.0)
    db.put_task("gated", state="pending")
    db.client.hset(db.keys.task("gated"), "gate", 1)
    db.client.zadd(db.keys.delayed, {"requeued": 0, "dependent": 0, "gated": 0})
    assert db.scripts.promote([("requeued", Q), ("dependent", Q), ("gated", Q)]) == 3
    assert db.queued() == {"requeued": 7.0, "dependent": 8.0}
    assert strings(db.client.zrange(db.keys.gate, 0, -1)) == ["gated"]
    assert (db.state("requeued"), db.state("dependent"), db.state("gated")) == (
        "queued", "pending", "pending")
    assert db.client.zcard(db.keys.delayed) == 0


def test_a_delayed_task_whose_record_is_not_a_hash_is_set_aside(db: Db) -> None:
    from balancer.setaside import SetAside
    from balancer.upkeep import Upkeep

    db.put_flow(2)
    db.put_task("ok", state="retrying", score=3.0)
    db.client.zadd(db.keys.delayed, {"bad": 0, "ok": 1})
    db.client.set(db.keys.task("bad"), "a string, not a task record")
    upkeep = Upkeep(db.client, db.keys, db.scripts, Settings(namespace=db.keys.namespace),
                    SetAside(db.scripts, lambda: 0.0))
    assert upkeep.promote(now_ms=10.0**13)[0] == 1
    assert db.queued() == {"ok": 3.0} and db.client.zcard(db.keys.delayed) == 0
    (entry,) = [Aside.from_blob(blob) for blob in db.client.hvals(db.keys.aside)]
    assert (entry.key, entry.kind, entry.member) == (db.keys.delayed, "wrong-type", b"bad")


def test_a_full_batch_of_entries_not_due_yet_says_when_the_first_is_due(db: Db) -> None:
    """Only a batch all due means more may be due behind it: a batch of later starts must
    not have the dispatcher look again at once, and again, until the first is due."""
    from balancer.setaside import SetAside
    from balancer.upkeep import BATCH, Upkeep

    upkeep = Upkeep(db.client, db.keys, db.scripts, Settings(namespace=db.keys.namespace),
                    SetAside(db.scripts, lambda: 0.0))
    db.client.zadd(db.keys.delayed, {f"t{i}": 5_000 + i for i in range(BATCH + 1)})
    assert upkeep.promote(now_ms=1_000.0) == (0, 5_000)
    db.client.zadd(db.keys.delayed, {f"t{i}": 0 for i in range(BATCH + 1)})
    assert upkeep.promote(now_ms=1_000.0) == (0, 1_000.0)  # all due: look again at once
