"""dlq_retry.lua and dlq_purge.lua: an operator retries or purges a quarantined task."""

from __future__ import annotations

import pytest
from balancer.common import signals
from balancer.common.scripts import FAIL_QUARANTINED, Child

from tests.common.lua.db import FLOW, POISON, TTL, Db, Q, strings


@pytest.fixture
def quarantined(db: Db) -> Db:
    db.put_flow(2)
    db.put_task("a", lost=POISON - 1, score=4.0, children=[Child("b", Q, 1.0)])
    db.put_task("b", state="pending", upstream=1)
    token = db.lease("a")["a"]
    assert db.fail("a", token, "crash") == FAIL_QUARANTINED
    db.client.delete(db.keys.wake)
    return db


def test_dlq_retry_queues_a_quarantined_task_with_its_losses_forgiven(quarantined: Db) -> None:
    db = quarantined
    assert db.scripts.dlq_retry("a", Q) is True
    record = db.task("a")
    assert (record["state"], record["lost"]) == ("queued", "0")
    assert db.queued() == {"a": 4.0}
    assert db.client.zcard(db.keys.dlq) == 0
    assert db.wake() == [signals.SUBMITTED]
    assert db.scripts.dlq_retry("a", Q) is False
    assert db.wake() == [signals.SUBMITTED]


def test_dlq_purge_fails_a_quarantined_task_for_good(quarantined: Db) -> None:
    db = quarantined
    assert db.scripts.dlq_purge("a", FLOW, TTL) is True
    record = db.task("a")
    assert (record["state"], record["error"]) == ("failed", "boom")
    assert 0 < db.client.pttl(db.keys.task("a")) <= TTL
    assert db.client.zcard(db.keys.dlq) == 0
    assert strings(db.client.lrange(db.keys.cascade, 0, -1)) == ["a"]
    assert db.wake() == [signals.CASCADE]
    assert (db.flow("failed"), db.flow("remaining")) == ("1", "1")
    assert db.scripts.dlq_purge("a", FLOW, TTL) is False
    assert (db.flow("failed"), db.flow("remaining")) == ("1", "1")


def test_dlq_operations_leave_a_task_that_is_not_quarantined(db: Db) -> None:
    db.put_flow(1)
    db.put_task("a", score=4.0)
    assert db.scripts.dlq_retry("a", Q) is False
    assert db.scripts.dlq_purge("a", FLOW, TTL) is False
    assert (db.state("a"), db.queued()) == ("queued", {"a": 4.0})
    assert db.flow("remaining") == "1"
    assert db.wake() == []
