"""A worker's start reads the cluster's partition count after ``reach``: a Redis restarted
in between (answering LOADING) is waited out there too, not a traceback."""

from __future__ import annotations

import logging

import pytest
import redis
from balancer.common import partitions, retry
from balancer.common.keys import Keys
from balancer.common.settings import Settings
from balancer.worker.supervisor import Worker


def test_a_worker_whose_redis_loads_when_it_reads_the_partition_count_waits_for_it(
        fake: redis.Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    real = partitions.count
    calls: list[int] = []

    def loading_twice(client: redis.Redis, keys: Keys) -> int:
        calls.append(1)
        if len(calls) <= 2:
            raise redis.exceptions.BusyLoadingError(
                "Redis is loading the dataset in memory", status_code="LOADING")
        return real(client, keys)

    monkeypatch.setattr(partitions, "count", loading_twice)
    monkeypatch.setattr(retry.time, "sleep", lambda _s: None)
    with caplog.at_level(logging.INFO, logger="worker"):
        worker = Worker(fake, settings, name="w1", pool="thread")
    assert worker.count == 1 and len(calls) == 3
    said = [r.getMessage() for r in caplog.records]
    assert sum("worker cannot start yet (BusyLoadingError" in m for m in said) == 1, said
    assert said.count("worker could start") == 1, said
