"""Huey on Redis: ``huey_consumer bench.compare.huey_app.huey -w SLOTS -k process`` per
worker. Priorities need ``PriorityRedisHuey`` (``huey_prio``; higher is served first)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from huey import PriorityRedisHuey, RedisHuey

from bench.compare import work
from bench.compare.base import Job, Layout, System, python

HIGH, LOW = 10, 0


def noop(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("noop", key, tag, arg)


def sleep(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


def cpu(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("cpu", key, tag, arg)


def make(url: str, priority: bool) -> tuple[RedisHuey, dict[str, Callable[..., Any]]]:
    cls = PriorityRedisHuey if priority else RedisHuey
    instance = cls("bench", url=url)
    return instance, {fn.__name__: instance.task()(fn) for fn in (noop, sleep, cpu)}


_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:1/0")
huey, _ = make(_URL, priority=False)
huey_prio, _ = make(_URL, priority=True)


class HueySystem(System):
    name = "huey"
    has_priority = True
    instance: RedisHuey | None = None
    tasks: dict[str, Callable[..., Any]]

    def connect(self, layout: Layout) -> None:
        self.instance, self.tasks = make(self.broker_url, layout.priority)

    def disconnect(self) -> None:
        if self.instance is not None:
            self.instance.storage.conn.connection_pool.disconnect()
            self.instance = None

    def commands(self, layout: Layout) -> list[tuple[list[str], dict[str, str], int]]:
        target = "bench.compare.huey_app." + ("huey_prio" if layout.priority else "huey")
        argv = python("-m", "huey.bin.huey_consumer", target, "-w", str(layout.slots),
                      "-k", "process")
        return [(argv, {}, i) for i in range(layout.workers)]

    def submit(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            options = {}
            if job.priority:
                options["priority"] = HIGH if job.priority == "high" else LOW
            self.tasks[job.kind](job.key, job.tag, job.arg, **options)
