"""The Lua side of gated tasks (maps, triggers, skips): fail.lua's skip and again modes,
cascade.lua counting a gated dependent's settled upstreams, ack.lua putting a gated
dependent in the gate, and gate.lua applying each decision once."""

from __future__ import annotations

from balancer.common import codec
from balancer.common.scripts import FAIL_RETRIED, FAIL_SKIPPED, Child

from tests.common.lua.db import FLOW, NEVER, TTL, Db, Q, strings


def test_a_task_that_raised_skip_settles_as_skipped_and_queues_its_dependents(db: Db) -> None:
    db.put_flow(2)
    db.put_task("a", retries=3, children=[Child("b", Q, 1.0)])
    db.put_task("b", state="pending", upstream=1)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "skip") == FAIL_SKIPPED
    assert db.state("a") == "skipped"
    assert codec.unpack(db.client.hget(db.keys.task("a"), "result")) is None
    assert (db.flow("remaining"), db.flow("failed")) == ("1", "0")
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["a"]
    assert db.fail("a", token, "skip") == FAIL_SKIPPED  # a replay answers the same


def test_retry_signal_retries_with_no_retries_configured(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", retries=0)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "again") == FAIL_RETRIED
    assert db.state("a") == "retrying" and db.client.zscore(db.keys.delayed, "a") is not None


def test_a_skip_cascade_skips_plain_dependents_and_counts_for_gated_ones(db: Db) -> None:
    db.put_flow(4)
    db.put_task("a", state="skipped")
    db.put_task("plain", state="pending", upstream=1, children=[Child("after", Q, 1.0)])
    db.put_task("after", state="pending", upstream=1)
    db.put_task("gated", state="pending", upstream=2)
    db.client.rpush(db.keys.cascade, "a")
    n = db.scripts.cascade("a", FLOW, b"skipped", ["plain", "gated"], TTL, {"gated"},
                           skipped=True)
    assert n == 2
    assert db.state("plain") == "skipped" and int(db.task("plain")["deps"]) >= NEVER
    assert db.task("gated")["deps"] == "1" and db.task("gated")["upskipped"] == "1"
    assert db.client.zcard(db.keys.gate) == 0  # one upstream still to settle
    assert (db.flow("remaining"), db.flow("failed")) == ("3", "0")
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["plain"]
    # Run again (a stale dispatcher): the gated dependent is not counted twice.
    assert db.scripts.cascade("a", FLOW, b"skipped", ["plain", "gated"], TTL, {"gated"},
                              skipped=True) == 0
    assert db.task("gated")["deps"] == "1"


def test_a_gated_dependent_goes_to_the_gate_when_its_last_upstream_settles(db: Db) -> None:
    db.put_flow(3)
    gated = Child("g", Q, 1.0, gated=True)
    db.put_task("a", state="failed")
    db.put_task("b", children=[gated])
    db.put_task("g", state="pending", upstream=2)
    db.client.rpush(db.keys.cascade, "a")
    db.scripts.cascade("a", FLOW, b"failed", ["g"], TTL, {"g"})
    assert db.task("g")["upfailed"] == "1" and db.client.zcard(db.keys.gate) == 0
    token = db.lease("b")["b"]
    assert db.ack("b", token, gated)
    assert strings(db.client.zrange(db.keys.gate, 0, -1)) == ["g"]
    assert db.queued() == {}  # not in its queue: the dispatcher decides


def test_gate_applies_a_decision_once(db: Db) -> None:
    db.put_flow(1)
    db.put_task("g", state="pending")
    db.client.zadd(db.keys.gate, {"g": 1})
    assert db.scripts.gate("g", FLOW, Q, "queue", TTL, score=7.0)
    assert db.queued() == {"g": 7.0}
    assert not db.scripts.gate("g", FLOW, Q, "fail", TTL, state="upstream_failed")
    assert db.state("g") == "pending"


def test_gate_gathers_a_map_and_unlocks_its_dependents(db: Db) -> None:
    db.put_flow(3)
    db.put_task("m", state="running", children=[Child("d", Q, 2.0)])
    db.put_task("d", state="pending", upstream=1)
    db.client.zadd(db.keys.gate, {"m": 1})
    result = codec.pack_packed_list([codec.pack(1), codec.pack(None), codec.pack("x")])
    assert db.scripts.gate("m", FLOW, Q, "gather", TTL, state="completed", result=result,
                           dependents=[Child("d", Q, 2.0)])
    assert db.state("m") == "completed"
    assert codec.unpack(db.client.hget(db.keys.task("m"), "result")) == [1, None, "x"]
    assert db.queued() == {"d": 2.0}
    assert db.flow("remaining") == "2"


def test_gate_parks_what_a_queue_of_another_type_refuses_and_still_settles_the_map(
        db: Db) -> None:
    """A map gathered while its dependent's queue is a key of another type: the map settles
    and the dependent waits in the delayed set (promote.lua queues it once the key is
    fixed), instead of the script stopping with the map settled and the dependent lost."""
    db.put_flow(3)
    db.put_task("m", state="running", children=[Child("d", "broken", 2.0)])
    db.put_task("d", state="pending", queue="broken", upstream=1)
    db.client.set(db.keys.queue("broken"), "a string, not a queue")
    db.client.zadd(db.keys.gate, {"m": 1})
    assert db.scripts.gate("m", FLOW, Q, "gather", TTL, state="completed",
                           result=codec.pack_packed_list([]),
                           dependents=[Child("d", "broken", 2.0)])
    assert db.state("m") == "completed" and db.state("d") == "pending"
    assert db.client.zscore(db.keys.delayed, "d") is not None
    assert b"r" in db.client.lrange(db.keys.wake, 0, -1)


def test_gate_passes_over_a_dependent_whose_record_was_clobbered(db: Db) -> None:
    """As an ack does (the prelude's unlock): the map settles and its other dependent is
    queued, instead of the script stopping at the record that is not a hash."""
    db.put_flow(3)
    clobbered, fine = Child("x", Q, 1.0), Child("y", Q, 2.0)
    db.put_task("m", state="running", children=[clobbered, fine])
    db.put_task("y", state="pending", upstream=1)
    db.client.set(db.keys.task("x"), "not a task record")
    db.client.zadd(db.keys.gate, {"m": 1})
    assert db.scripts.gate("m", FLOW, Q, "gather", TTL, state="completed",
                           result=codec.pack_packed_list([]), dependents=[clobbered, fine])
    assert db.state("m") == "completed" and db.queued() == {"y": 2.0}
    assert db.client.get(db.keys.task("x")) == b"not a task record"
