"""An in-process cluster on the real Redis: the dispatcher and workers as threads, for
tests about flow semantics. Tests about processes and crashes use ``procs`` instead."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from balancer.common.settings import Settings
from balancer.worker.supervisor import Worker

from balancer.dispatcher import Dispatcher
from bench.redis_servers import LocalCluster
from tests.integration.topologies import OneAddress, SentinelSet, running


class ThreadCluster:
    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.dispatcher = Dispatcher(client, settings)
        self.thread = threading.Thread(target=self.dispatcher.run, daemon=True)
        self.workers: list[Worker] = []

    def start(self) -> ThreadCluster:
        self.thread.start()
        return self

    def add_worker(self, queues: tuple[str, ...] = ("default",), concurrency: int = 2,
                   name: str | None = None, pool: str = "thread") -> Worker:
        client = redis.Redis(connection_pool=self.client.connection_pool)
        worker = Worker(client, self.settings, queues=queues, concurrency=concurrency,
                        pool=pool, name=name or f"w{len(self.workers)}")
        worker.start()
        self.workers.append(worker)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.shutdown(grace=2)
        self.dispatcher.stop()
        self.thread.join(5)


@pytest.fixture
def cluster(real: redis.Redis, settings: Settings, redis_url: str) -> Iterator[ThreadCluster]:
    s = settings.replace(redis_url=redis_url)
    c = ThreadCluster(real, s).start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def local_cluster(request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    """A Redis Cluster of 3 masters and 3 replicas, one per test module: its tests run in
    order, and one that kills a master runs last. A module's ``FULL_COVERAGE = False``
    lets the other masters serve while one fails over (LocalCluster)."""
    yield from running(LocalCluster(getattr(request.module, "FULL_COVERAGE", True)))


@pytest.fixture
def sentinels(request: pytest.FixtureRequest) -> Iterator[SentinelSet]:
    """A master with one replica (or ``param`` replicas, parametrized indirectly) behind
    three sentinels."""
    yield from running(SentinelSet(replicas=getattr(request, "param", 1)))


@pytest.fixture
def one_address() -> Iterator[OneAddress]:
    """A master and its replica behind one address that moves at the failover."""
    yield from running(OneAddress())
