"""A partition's dispatcher rings the doorbell of the workers it leases to, in each
worker's home partition: a doorbell out of reach (that partition's master failing over)
must not stop the partition that leased."""

from __future__ import annotations

import logging
import random
from typing import Any

import pytest
import redis
from balancer.common import partitions, signals
from balancer.common.connection import Direct
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings

from balancer import Flow, task
from balancer.dispatcher import Dispatcher

COUNT = 3


@task
def work(n: int) -> int:
    return n


def _worker_homed_elsewhere() -> str:
    """A worker id whose doorbell is in partition 0, not in partition 1 that leases."""
    return next(w for w in (f"w{i}" for i in range(100)) if partitions.home(w, COUNT) == 0)


def test_a_doorbell_out_of_reach_leaves_the_lease_and_the_lead_in_place(
        fake: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = settings.replace(dispatch_tick=0.01)
    worker = _worker_homed_elsewhere()
    here, bell_home = Keys(settings.namespace, 1), Keys(settings.namespace, 0)
    fake.set(bell_home.partitions, COUNT)
    Scripts(fake, here).heartbeat(worker, WorkerInfo(worker, ("default",), 4).to_blob(),
                                  60_000)
    now = [1000.0]
    dispatcher = Dispatcher(fake, settings, rng=random.Random(0), partition=1, count=COUNT,
                            clock=lambda: now[0])
    dispatcher._one_server = False  # as on a Cluster: partition 0's doorbells elsewhere
    bell = bell_home.doorbell(worker)
    rings: list[bool] = []  # each try to ring the bell: whether its master answered
    up = [False]
    calls = Direct.calls

    def failing_at_the_bell(self: Direct, *commands: tuple[Any, ...]) -> list[Any]:
        if any(c[1:2] == (bell,) for c in commands):
            rings.append(up[0])
            if not up[0]:
                raise redis.ConnectionError("partition 0's master is failing over")
        return calls(self, *commands)

    monkeypatch.setattr(Direct, "calls", failing_at_the_bell)
    monkeypatch.setattr(partitions, "place", lambda base_id, count: 1)

    def lease_one(i: int) -> None:
        with Flow(f"f{i}") as flow:
            work(i)
        flow.submit(fake, namespace=settings.namespace)
        with caplog.at_level(logging.INFO, logger="balancer.dispatcher"):
            for _ in range(5):
                dispatcher.step()  # raised ConnectionError before: the lead was dropped

    lease_one(0)
    lease_one(1)  # within the backoff: the bell is not tried again
    assert rings == [False]
    leased = [lease.task_id for lease in map(signals.parse_lease,
                                             fake.lrange(here.inbox(worker), 0, -1)) if lease]
    assert len(leased) == 2  # both leases stand in partition 1, for the worker's sweep
    assert dispatcher.token is not None  # and partition 1 is still led
    assert fake.llen(bell) == 0
    up[0] = True
    now[0] += 1.0
    lease_one(2)
    assert rings == [False, True] and fake.lrange(bell, 0, -1) == [b"1"]
    said = [r.getMessage() for r in caplog.records if "doorbells in partition 0" in
            r.getMessage()]
    assert len(said) == 2 and "cannot ring" in said[0] and said[1].endswith("again")
