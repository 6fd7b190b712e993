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
    dispatcher = Dispatcher(fake, settings, rng=random.Random(0), partition=1, count=COUNT)
    bell = bell_home.doorbell(worker)
    real_pipeline = fake.pipeline

    def failing_at_the_bell(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)
        execute = pipe.execute

        def refused(*a: Any, **kw: Any) -> Any:
            if any(args[1:2] == (bell,) for args, _ in pipe.command_stack):
                raise redis.ConnectionError("partition 0's master is failing over")
            return execute(*a, **kw)

        pipe.execute = refused
        return pipe

    monkeypatch.setattr(fake, "pipeline", failing_at_the_bell)
    monkeypatch.setattr(partitions, "place", lambda base_id, count: 1)
    for i in range(2):
        with Flow(f"f{i}") as flow:
            work(i)
        flow.submit(fake, namespace=settings.namespace)
        with caplog.at_level(logging.WARNING, logger="balancer.dispatcher"):
            for _ in range(5):
                dispatcher.step()  # raised ConnectionError before
    leased = [lease.task_id for lease in map(signals.parse_lease,
                                             fake.lrange(here.inbox(worker), 0, -1)) if lease]
    assert len(leased) == 2  # both leases stand in partition 1, for the worker's sweep
    assert dispatcher.token is not None  # and partition 1 is still led
    assert fake.llen(bell) == 0
    said = [r for r in caplog.records if "cannot ring" in r.getMessage()]
    assert len(said) == 1  # once per episode
