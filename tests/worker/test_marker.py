"""The marker (worker/marker.py): a run past the long-run horizon is marked running in
Redis and makes the worker make way; a run not past it is left alone."""

from __future__ import annotations

import threading
import time

import pytest
from balancer.worker import marker
from balancer.worker.holding import Holding
from balancer.worker.marker import Marker

from tests.common.lua.db import Db, W

HORIZON = 30.0  # seconds: no run of this test reaches it by itself


def test_a_run_past_the_horizon_is_marked_running_and_makes_way(
        db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(marker, "AFTER", HORIZON)
    db.put_task("long")
    db.put_task("short")
    db.lease("long", "short")
    holding = Holding()
    for lease in db.inbox_leases(db.scripts.take(W, 2)):
        holding.add(lease)
    holding.start("long", at=time.monotonic() - HORIZON - 1)
    holding.start("short")
    stopping, made_way = threading.Event(), threading.Event()
    thread = Marker(W, db.scripts, holding, stopping, made_way.set)
    thread.start()
    try:
        assert made_way.wait(10)
    finally:
        stopping.set()
        thread.join(10)
    assert not thread.is_alive()
    record = db.task("long")
    assert (record["state"], record["worker"]) == ("running", W)
    assert db.state("short") == "queued"  # leased, not past the horizon: not marked
    assert holding.long_running() == 1


def _long_run(db: Db, at: float) -> Holding:
    db.put_task("long")
    db.lease("long")
    holding = Holding()
    for lease in db.inbox_leases(db.scripts.take(W, 1)):
        holding.add(lease)
    holding.start("long", at=at)
    return holding


def _run_marker(holding: Holding, db: Db, slots: int, sweeps: list[float],
                seconds: float) -> None:
    stopping = threading.Event()

    def sweep() -> int:
        sweeps.append(time.monotonic())
        return 0

    thread = Marker(W, db.scripts, holding, stopping, lambda: None, slots, sweep)
    thread.start()
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and len(sweeps) < 2:
            time.sleep(0.05)
    finally:
        stopping.set()
        thread.join(10)
    assert not thread.is_alive()


def test_while_long_runs_hold_every_slot_the_inbox_is_swept_again_and_again(
        db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease the dispatcher made before it heard of the long run (its heartbeat can reach
    the dispatcher after the signal of what was handed back) must not wait behind it: the
    marker keeps handing back what reaches the inbox while no slot could run it."""
    monkeypatch.setattr(marker, "AFTER", HORIZON)
    monkeypatch.setattr(marker, "SWEEP_EVERY", 0.1)
    holding = _long_run(db, at=time.monotonic() - HORIZON - 1)
    sweeps: list[float] = []
    _run_marker(holding, db, 1, sweeps, 30)
    assert len(sweeps) >= 2


def test_a_long_run_with_a_slot_free_beside_it_sweeps_nothing(
        db: Db, monkeypatch: pytest.MonkeyPatch) -> None:
    """The free slot fetches what reaches the inbox: no sweep takes it away."""
    monkeypatch.setattr(marker, "AFTER", HORIZON)
    monkeypatch.setattr(marker, "SWEEP_EVERY", 0.1)
    holding = _long_run(db, at=time.monotonic() - HORIZON - 1)
    sweeps: list[float] = []
    _run_marker(holding, db, 2, sweeps, 1.0)
    assert holding.long_running() == 1
    assert sweeps == []
