"""Dramatiq on Redis: ``dramatiq bench.compare.dramatiq_app -p 1 -t SLOTS`` per worker.

Defaults otherwise (a worker prefetches twice its threads; an idle consumer polls with
backoff up to 1 s). Priorities: the Redis broker has none; actors on two queues with
``priority`` (lower first) only order the messages a worker has already fetched.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench.compare import work
from bench.compare.base import Job, Layout, System, python

QUEUE, HIGH, LOW = "bench", "bench-high", "bench-low"

broker = RedisBroker(url=os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:1/0"))
dramatiq.set_broker(broker)


@dramatiq.actor(queue_name=QUEUE)
def noop(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("noop", key, tag, arg)


@dramatiq.actor(queue_name=QUEUE)
def sleep(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


@dramatiq.actor(queue_name=QUEUE)
def cpu(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("cpu", key, tag, arg)


@dramatiq.actor(queue_name=HIGH, priority=0)
def sleep_high(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


@dramatiq.actor(queue_name=LOW, priority=100)
def sleep_low(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


class DramatiqSystem(System):
    name = "dramatiq"
    has_priority = True
    client: RedisBroker | None = None

    def connect(self, layout: Layout) -> None:
        self.client = RedisBroker(url=self.broker_url)
        for queue in (QUEUE, HIGH, LOW):
            self.client.declare_queue(queue)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def commands(self, layout: Layout) -> list[tuple[list[str], dict[str, str], int]]:
        argv = python("-m", "dramatiq", "bench.compare.dramatiq_app", "-p", "1",
                      "-t", str(layout.slots))
        return [(argv, {}, i) for i in range(layout.workers)]

    def submit(self, jobs: Sequence[Job]) -> None:
        assert self.client is not None
        for job in jobs:
            if job.priority:
                queue, actor = (HIGH, "sleep_high") if job.priority == "high" else (LOW,
                                                                                   "sleep_low")
            else:
                queue, actor = QUEUE, job.kind
            self.client.enqueue(dramatiq.Message(queue_name=queue, actor_name=actor,
                                                 args=(job.key, job.tag, job.arg),
                                                 kwargs={}, options={}))
