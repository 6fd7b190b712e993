"""take.lua: an idle slot takes the entries waiting in its inbox, without blocking; an
entry whose lease the worker does not hold is dropped (and logged), never run."""

from __future__ import annotations

import logging

import pytest
from balancer.common import signals

from tests.common.lua.db import Db, W


def test_take_hands_over_entries_in_order_up_to_the_count(db: Db) -> None:
    for t in "abc":
        db.put_task(t)
    tokens = db.lease("a", "b", "c")
    taken = db.scripts.take(W, 2)
    assert [signals.parse_lease(raw).task_id for raw in taken] == ["a", "b"]  # type: ignore[union-attr]
    assert [lease.task_id for lease in db.inbox()] == ["c"]
    assert db.leases() == {f"{t}|{tokens[t]}" for t in "abc"}  # taken, still leased


def test_take_of_an_empty_inbox_takes_nothing(db: Db) -> None:
    assert db.scripts.take(W, 5) == []


def test_take_drops_and_logs_an_entry_whose_lease_the_worker_does_not_hold(
        db: Db, caplog: pytest.LogCaptureFixture) -> None:
    db.put_task("a")
    token = db.lease("a")["a"]
    [raw] = db.client.lrange(db.keys.inbox(W), 0, -1)
    forged = raw.replace(token.encode(), b"9.9.9")
    db.client.lpush(db.keys.inbox(W), forged)  # a writer to Redis pushed one more
    with caplog.at_level(logging.ERROR, logger="worker"):
        assert db.scripts.take(W, 5) == [raw]
    assert db.client.llen(db.keys.inbox(W)) == 0
    assert "dropped an inbox entry that holds no lease" in caplog.text


def test_take_without_fetched_leaves_what_a_blocking_fetch_moved_for_the_next_full_take(
        db: Db) -> None:
    for t in "ab":
        db.put_task(t)
    db.lease("a", "b")
    db.client.lmove(db.keys.inbox(W), db.keys.fetched(W), "LEFT", "RIGHT")  # "a" moved
    assert [signals.parse_lease(raw).task_id  # type: ignore[union-attr]
            for raw in db.scripts.take(W, 5, fetched=False)] == ["b"]
    assert [signals.parse_lease(raw).task_id  # type: ignore[union-attr]
            for raw in db.scripts.take(W, 5)] == ["a"]


def test_take_says_how_many_entries_the_inbox_still_holds(db: Db) -> None:
    for t in "abc":
        db.put_task(t)
    db.lease("a", "b", "c")
    entries, waiting = db.scripts.take_counted(W, 2)
    assert (len(entries), waiting) == (2, 1)
    assert db.scripts.take_counted(W, 2)[1] == 0  # "c" taken: nothing left
