"""cascade.lua: the dependents of a failed task fail with it, once."""

from __future__ import annotations

from balancer.common.scripts import Child

from tests.common.lua.db import FLOW, NEVER, TTL, Db, Q, strings


def test_cascade_fails_pending_children_and_is_idempotent(db: Db) -> None:
    # a failed (already counted); b and c wait on it; d waits on c.
    db.put_flow(3)
    db.put_task("a", state="failed", children=[Child("b", Q, 1.0), Child("c", Q, 1.0)])
    db.put_task("b", state="pending", upstream=1)
    db.put_task("c", state="pending", upstream=1, children=[Child("d", Q, 1.0)])
    db.put_task("d", state="pending", upstream=1)
    db.client.rpush(db.keys.cascade, "a")

    assert db.scripts.cascade("a", FLOW, b"upstream a failed", ["b", "c"], TTL) == 2
    for t in ("b", "c"):
        record = db.task(t)
        assert (record["state"], record["error"]) == ("upstream_failed", "upstream a failed")
        assert int(record["deps"]) >= NEVER  # never reaches 0, so never queued
        assert 0 < db.client.pttl(db.keys.task(t)) <= TTL
    assert db.state("d") == "pending"
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["c"]
    assert (db.flow("remaining"), db.flow("failed")) == ("1", "2")

    assert db.scripts.cascade("a", FLOW, b"upstream a failed", ["b", "c"], TTL) == 0
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["c"]
    assert (db.flow("remaining"), db.flow("failed")) == ("1", "2")

    assert db.scripts.cascade("c", FLOW, b"upstream c failed", ["d"], TTL) == 1
    assert db.state("d") == "upstream_failed"
    assert db.client.llen(db.keys.cascade) == 0
    assert db.flow("state") == "failed"
    assert db.client.lrange(db.keys.flow_done(FLOW), 0, -1) == [b"failed"]


def test_cascade_leaves_children_that_are_not_pending(db: Db) -> None:
    db.put_flow(1)
    db.put_task("b", state="completed")
    assert db.scripts.cascade("a", FLOW, b"err", ["b"], TTL) == 0
    assert db.state("b") == "completed"
    assert db.flow("remaining") == "1"
