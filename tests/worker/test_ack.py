"""The ack thread (worker/ack.py): outcomes stored in batches, a call cut off or refused by
Redis made again until it lands, refusals logged, each failure in the mode its outcome
asks for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest
import redis
from balancer.common import codec
from balancer.common.settings import Settings
from balancer.worker.ack import Acker
from balancer.worker.holding import Holding

from tests.common.lua.db import POISON, Db, W
from tests.worker.scripted import Spy, failure, success, take_all


@pytest.fixture
def holding() -> Holding:
    return Holding()


@pytest.fixture
def acker(db: Db, settings: Settings, holding: Holding) -> Iterator[Acker]:
    ack = Acker(W, db.scripts, settings.replace(poison_threshold=POISON), holding,
                busy=lambda: 0)
    yield ack
    if ack.is_alive():
        ack.close(5)


def test_results_that_finish_while_a_call_is_on_the_wire_share_the_next_call(
        db: Db, acker: Acker, holding: Holding) -> None:
    db.put_flow(4)
    leases = take_all(db, "a", "b", "c", "d")
    for lease in leases.values():
        holding.add(lease)
    on_wire, go_on = threading.Event(), threading.Event()

    def first_waits(n: int) -> None:
        if n == 1:
            on_wire.set()
            assert go_on.wait(10)

    spy = Spy(db.scripts, "ack_and_take", first_waits)
    acker.start()
    acker.submit(success(leases["a"]))
    assert on_wire.wait(10)
    for t in "bcd":  # they finish while "a" is being stored
        acker.submit(success(leases[t]))
    go_on.set()
    acker.close(10)
    assert [[d.task_id for d in call[1]] for call in spy.calls] == [["a"], ["b", "c", "d"]]
    assert [db.state(t) for t in "abcd"] == ["completed"] * 4
    assert len(holding) == 0


@pytest.mark.parametrize("error", [
    redis.ConnectionError("Connection reset by peer"),
    redis.ResponseError("OOM command not allowed when used memory > 'maxmemory'"),
], ids=["lost-connection", "error-reply"])
def test_a_store_cut_off_by_redis_is_made_again_until_it_lands(
        db: Db, acker: Acker, error: Exception, caplog: pytest.LogCaptureFixture) -> None:
    db.put_flow(2)
    leases = take_all(db, "a", "b")

    def fails_twice(n: int) -> None:
        if n <= 2:
            raise error

    spy = Spy(db.scripts, "ack_and_take", fails_twice)
    fail_spy = Spy(db.scripts, "fail", fails_twice)
    with caplog.at_level(logging.INFO, logger="worker"):
        acker.store([success(leases["a"], 42), failure(leases["b"], retryable=False)])
    assert (len(spy.calls), len(fail_spy.calls)) == (3, 3)
    assert codec.unpack(db.client.hget(db.keys.task("a"), "result")) == 42  # type: ignore[arg-type]
    assert db.state("b") == "failed"
    assert caplog.text.count("cannot be acknowledged") == 2  # once per episode
    assert caplog.text.count("could be acknowledged again") == 2
    assert db.leases() == set()


def test_outcomes_for_leases_that_moved_on_are_refused_and_logged(
        db: Db, acker: Acker, holding: Holding, caplog: pytest.LogCaptureFixture) -> None:
    db.put_flow(2)
    leases = take_all(db, "a", "b")
    for lease in leases.values():
        holding.add(lease)
    db.client.delete(db.keys.leases(W))  # the reaper took both back meanwhile
    with caplog.at_level(logging.WARNING, logger="worker"):
        acker.store([success(leases["a"]), failure(leases["b"])])
    assert (db.state("a"), db.state("b")) == ("queued", "queued")
    for t in "ab":
        assert f"task={t} lease={leases[t].token}: outcome refused" in caplog.text
    assert len(holding) == 0  # refused or not, the worker no longer holds them


@pytest.mark.parametrize(("how", "state", "verdict"), [
    ({"quarantine": True}, "dead", "quarantined"),
    ({"crashed": True}, "queued", "will run again"),
    ({"retryable": True}, "retrying", "will run again"),
    ({"retryable": False}, "failed", "failed"),
], ids=["quarantine", "crash", "retry", "final"])
def test_a_failure_is_stored_in_the_mode_its_outcome_asks_for(
        db: Db, acker: Acker, how: dict[str, bool], state: str, verdict: str,
        caplog: pytest.LogCaptureFixture) -> None:
    db.put_flow(1)
    db.put_task("a", retries=3, retry_delay=60.0)
    lease = take_all(db, "a")["a"]
    with caplog.at_level(logging.WARNING, logger="worker"):
        acker.store([failure(lease, **how)])
    record = db.task("a")
    assert record["state"] == state
    assert (record["failures"], record["lost"]) == (
        ("1", "0") if state in ("retrying", "failed") else
        ("0", "1") if state == "queued" else ("0", "0"))
    assert (db.queued() == {"a": 1000.0}) == (state == "queued")
    assert (db.client.zscore(db.keys.dlq, "a") is not None) == (state == "dead")
    assert f"task=a {verdict} after" in caplog.text
    assert "ValueError" in caplog.text


@pytest.mark.parametrize(("depth", "signals"), [(1, ["k|w1|3", "k|w1|2"]), (32, ["k|w1|2"])])
def test_a_worker_freeing_slots_wakes_the_dispatcher_at_each_unless_it_prefetches(
        db: Db, settings: Settings, holding: Holding, depth: int, signals: list[str]) -> None:
    """A 4-slot worker running tasks leased one per slot is due a refill as soon as a slot
    frees: each ack signals, the second before any refill too. With prefetch it holds
    more than it needs meanwhile, and signals only at checkpoints (here 2 leases)."""
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t)
    db.lease(*"abcd", depth=depth)
    leases = {lease.task_id: lease for lease in db.inbox_leases(db.scripts.take(W, 100))}
    assert all(lease.depth == depth for lease in leases.values())
    db.client.delete(db.keys.wake)
    ack = Acker(W, db.scripts, settings, holding, busy=lambda: 3, slots=4)
    ack.store([success(leases["a"])])
    ack.store([success(leases["b"])])
    assert db.wake() == signals
