"""arq: ``arq bench.compare.arq_app.WorkerSettings`` per worker, ``max_jobs`` = slots.

arq runs coroutines: the sleep task awaits ``asyncio.sleep`` (so slots overlap), noop and
cpu run inline. It polls its queue every ``poll_delay`` (0.5 s, the default) when idle
and has no priorities.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence
from typing import Any

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from bench.compare import work
from bench.compare.base import Job, Layout, System, python


async def noop(ctx: dict[str, Any], key: str, tag: str, arg: float = 0.0) -> None:
    work.run("noop", key, tag, arg)


async def sleep(ctx: dict[str, Any], key: str, tag: str, arg: float = 0.0) -> None:
    start = time.time()
    await asyncio.sleep(arg)
    work.record(key, tag, start, time.time())


async def cpu(ctx: dict[str, Any], key: str, tag: str, arg: float = 0.0) -> None:
    work.run("cpu", key, tag, arg)


class WorkerSettings:
    functions = [noop, sleep, cpu]
    redis_settings = RedisSettings.from_dsn(os.environ.get("BENCH_BROKER_URL",
                                                           "redis://127.0.0.1:1/0"))
    max_jobs = int(os.environ.get("BENCH_SLOTS", "10"))


class ArqSystem(System):
    name = "arq"
    loop: asyncio.AbstractEventLoop | None = None
    pool: ArqRedis

    def connect(self, layout: Layout) -> None:
        self.loop = asyncio.new_event_loop()
        self.pool = self.loop.run_until_complete(
            create_pool(RedisSettings.from_dsn(self.broker_url)))

    def disconnect(self) -> None:
        if self.loop is not None:
            self.loop.run_until_complete(self.pool.aclose())
            self.loop.close()
            self.loop = None

    def commands(self, layout: Layout) -> list[tuple[list[str], dict[str, str], int]]:
        argv = python("-m", "arq", "bench.compare.arq_app.WorkerSettings")
        return [(argv, {}, i) for i in range(layout.workers)]

    def submit(self, jobs: Sequence[Job]) -> None:
        async def send() -> None:
            for job in jobs:
                await self.pool.enqueue_job(job.kind, job.key, job.tag, job.arg)

        assert self.loop is not None
        self.loop.run_until_complete(send())
