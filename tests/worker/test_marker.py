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
