"""A pool child's slot (worker/batchslot.py): it takes its next batch with the ack, makes
way (hands back what it has not started, stores what waits) and tells Redis when it starts
a suspect. The slot runs in the test's thread, its tasks in a scripted runner."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis
from balancer.common import codec, luasource
from balancer.common.scripts import Durability, Scripts
from balancer.common.settings import Settings
from balancer.worker import batchslot
from balancer.worker.ack import Acker
from balancer.worker.batchslot import BatchSlot
from balancer.worker.holding import Holding
from balancer.worker.inbox import Inbox
from balancer.worker.outcome import Outcome

from tests.common.lua.db import Db, Q, W
from tests.worker.scripted import Spy

FIELD = "0"  # the child's field of ahead:<worker>


@dataclass
class Runner:
    """Runs a task by calling ``on_run`` with its id (read off the slot), and returns it."""

    on_run: Callable[[str], None]
    slot: BatchSlot | None = None
    ran: list[str] = field(default_factory=list)

    def run(self, fn_path: str, args_blob: bytes, timeout: float | None) -> Outcome:
        assert self.slot is not None and self.slot.current is not None
        self.ran.append(self.slot.current)
        self.on_run(self.slot.current)
        return Outcome(True, codec.pack(self.slot.current))

    def stop_task(self, why: str) -> None:
        pass

    def close(self, kill: bool = False) -> None:
        pass


@dataclass
class Child:
    slot: BatchSlot
    runner: Runner
    holding: Holding
    stopping: threading.Event

    def run(self) -> None:
        """Run the slot's loop here, until a task sets ``stopping``."""
        self.slot.run()


def child(db: Db, settings: Settings, on_run: Callable[[str], None]) -> Child:
    holding = Holding()
    holding.learn(Q, 1.0)  # short tasks: batches as deep as the prefetch
    stopping = threading.Event()
    inbox = Inbox(W, db.client, db.keys, holding.add, stopping)
    acker = Acker(W, db.scripts, settings, holding, busy=lambda: 0)
    runner = Runner(on_run)
    slot = BatchSlot(W, db.client, db.keys, runner, inbox, acker, holding, stopping, FIELD)
    runner.slot = slot
    return Child(slot, runner, holding, stopping)


def ahead(db: Db) -> str | None:
    return db.field(db.keys.ahead(W), FIELD)


def test_the_next_batch_is_taken_with_the_ack_and_listed_as_not_started(
        db: Db, settings: Settings) -> None:
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t)
    tokens = db.lease("a", "b", "c", "d", depth=16)  # short tasks: prefetched 16 deep
    seen: dict[str, str | None] = {}

    def on_run(task_id: str) -> None:
        seen[task_id] = ahead(db)
        if task_id == "d":
            c.stopping.set()

    c = child(db, settings, on_run)
    fetches = Spy(c.slot.inbox.direct, "calls")  # type: ignore[arg-type]
    takes = Spy(c.slot.inbox.scripts, "take_counted")
    acks = Spy(db.scripts, "ack_and_take")
    c.run()
    assert c.runner.ran == ["a", "b", "c", "d"]
    assert len(fetches.calls) == 1 and not takes.calls  # "a" alone was fetched; b, c, d
    # came with its ack
    first = acks.calls[0]
    assert [d.task_id for d in first[1]] == ["a"]
    assert first[4] >= 3 and first[6] == FIELD  # a batch of the prefetch depth, as FIELD
    listed = f"c|{tokens['c']} d|{tokens['d']}"
    assert seen == {"a": None, "b": listed, "c": listed, "d": listed}
    assert [db.state(t) for t in "abcd"] == ["completed"] * 4
    assert db.leases() == set()
    assert len(c.holding) == 0


def b_arrives_while_a_runs(db: Db, settings: Settings,
                           also: Callable[[], object] = lambda: None) -> Child:
    """A child whose inbox holds "a"; "b" is leased while "a" runs (after ``also``), and
    the child stops once "b" has run."""
    db.put_flow(2)
    for t in "ab":
        db.put_task(t)
    db.lease("a")

    def on_run(task_id: str) -> None:
        if task_id == "a":
            also()
            db.lease("b")
        else:
            c.stopping.set()

    c = child(db, settings, on_run)
    return c


def test_an_idle_child_sends_its_ack_with_its_next_blocking_fetch(
        db: Db, settings: Settings) -> None:
    """One round trip per task for a child that takes one lease at a time: the ack of
    "a" goes down with the fetch that brings "b", which arrived while "a" ran."""
    db.client.script_load(luasource.source("ack"))  # as after the worker's first ack
    c = b_arrives_while_a_runs(db, settings)
    acks = Spy(db.scripts, "ack_and_take")
    ahead_calls = Spy(c.slot.inbox.direct, "call_ahead")  # type: ignore[arg-type]
    fetches = Spy(c.slot.inbox.direct, "calls")  # type: ignore[arg-type]
    c.run()
    assert c.runner.ran == ["a", "b"]
    assert len(fetches.calls) == 1  # "a"'s fetch; "b" came with "a"'s ack
    assert len(ahead_calls.calls) == 1 and ahead_calls.calls[0][0][0] == "EVALSHA"
    assert [[d.task_id for d in call[1]] for call in acks.calls] == [["b"]]  # stopping
    assert [db.state(t) for t in "ab"] == ["completed"] * 2
    assert db.leases() == set() and db.inbox() == []


def test_an_ack_refused_on_its_way_with_the_fetch_is_made_again_and_the_fetch_stands(
        db: Db, settings: Settings) -> None:
    """A server that lost its scripts (a restart) refuses the ack sent with the fetch:
    the ack is made again the usual way, and the fetch sent behind it still brings the
    next lease."""
    c = b_arrives_while_a_runs(db, settings, db.client.script_flush)
    acks = Spy(db.scripts, "ack_and_take")
    c.run()
    assert c.runner.ran == ["a", "b"]
    assert [[d.task_id for d in call[1]] for call in acks.calls] == [["a"], ["b"]]
    assert [call[4] for call in acks.calls] == [0, 0]  # the fetch takes; the ack does not
    assert [db.state(t) for t in "ab"] == ["completed"] * 2
    assert db.leases() == set() and db.inbox() == []


def test_an_ack_that_waits_for_replicas_takes_the_next_lease_itself(
        real: redis.Redis, namespace: str, settings: Settings) -> None:
    """WAIT counts what its own connection wrote: with BALANCER_MIN_REPLICAS the ack goes
    with its WAIT, not with the fetch, and takes the next lease as before. (A real Redis:
    fakeredis has no WAIT; this one has no replica, and the ack stands unconfirmed.)"""
    opened = Db.open(real, namespace)
    db = Db(real, opened.keys, Scripts(real, opened.keys, durability=Durability(1, 5)),
            opened.leader)
    c = b_arrives_while_a_runs(db, settings)
    acks = Spy(db.scripts, "ack_and_take")
    ahead_calls = Spy(c.slot.inbox.direct, "call_ahead")  # type: ignore[arg-type]
    c.run()
    assert c.runner.ran == ["a", "b"]
    assert ahead_calls.calls == []
    assert [(call[1][0].task_id, call[4]) for call in acks.calls] == [("a", 1), ("b", 0)]
    assert [db.state(t) for t in "ab"] == ["completed"] * 2
    assert db.leases() == set() and db.inbox() == []


def test_a_lease_the_fetch_sent_with_the_last_ack_took_is_handed_back_at_stop(
        db: Db, settings: Settings, caplog: pytest.LogCaptureFixture) -> None:
    db.put_flow(2)
    for t in "ab":
        db.put_task(t, score=float(ord(t)))
    db.lease("a")
    c = child(db, settings, lambda task_id: db.lease("b"))
    # The child is told to stop just after it sent "a"'s ack and the fetch that takes "b".
    Spy(c.slot.inbox.direct, "call_ahead", lambda _: c.stopping.set())  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="worker"):
        c.run()
    assert c.runner.ran == ["a"]
    assert db.state("a") == "completed"
    assert db.queued() == {"b": float(ord("b"))}  # handed back, never run
    assert db.leases() == set() and db.inbox() == []
    assert db.client.llen(db.keys.fetched(W)) == 0
    assert f"worker={W} handed back 1 tasks taken ahead: b" in caplog.text


def test_make_way_hands_back_what_is_not_started_and_stores_what_waits(
        db: Db, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(batchslot, "ACK_WITHIN", 60.0)  # "b"'s result waits for its batch
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t, score=float(ord(t)))
    tokens = db.lease("a", "b", "c", "d", depth=16)
    during: dict[str, object] = {}

    def on_run(task_id: str) -> None:
        if task_id == "b":
            during["b waits"] = db.state("b")
        if task_id == "c":  # "c" runs long: the supervisor asks the child to make way
            c.slot.make_way()
            during["b stored"] = db.state("b")
            during["queued"] = db.queued()
            during["held"] = sorted(c.holding.held_ids())
            c.stopping.set()

    c = child(db, settings, on_run)
    with caplog.at_level(logging.INFO, logger="worker"):
        c.run()
    assert c.runner.ran == ["a", "b", "c"]
    assert during == {"b waits": "queued", "b stored": "completed",
                      "queued": {"d": float(ord("d"))}, "held": ["c"]}
    assert [db.state(t) for t in "abc"] == ["completed"] * 3
    assert db.leases() == set()  # "d" is no lease of W's any more
    assert db.inbox() == []
    assert f"worker={W} handed back 1 tasks taken ahead: d" in caplog.text
    assert tokens["d"] not in (ahead(db) or "").split("|")[0]


def test_a_suspect_taken_ahead_tells_redis_when_it_starts(db: Db, settings: Settings) -> None:
    db.put_flow(4)
    for t in "abcd":
        db.put_task(t)
    db.client.hset(db.keys.task("c"), "suspect", 1)  # its worker died with it in a batch
    tokens = db.lease("a", "b", "c", "d", depth=16)
    assert tokens["c"].endswith("!") and not tokens["b"].endswith("!")
    seen: dict[str, str | None] = {}

    def on_run(task_id: str) -> None:
        seen[task_id] = ahead(db)
        if task_id == "d":
            c.stopping.set()

    c = child(db, settings, on_run)
    c.run()
    listed = f"c|{tokens['c']} d|{tokens['d']}"
    assert seen["b"] == listed  # "b" is no suspect: nothing told
    # "c" is told as it starts: Redis lists only "d" as perhaps not started, so the
    # reaper would count a loss for "c" from now on.
    assert seen["c"] == seen["d"] == ahead(db) == f"d|{tokens['d']}"
    assert [db.state(t) for t in "abcd"] == ["completed"] * 4
