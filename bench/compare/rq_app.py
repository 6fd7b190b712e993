"""RQ: one ``rq worker`` process per slot (RQ runs one job at a time per worker, each in a
forked work horse, its default). Priorities: a worker serves its queues in the order
given, ``rq worker bench-high bench-low``. Batches go through ``Queue.enqueue_many``.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from rq import Queue

from bench.compare import work
from bench.compare.base import Job, Layout, System, python

QUEUE, HIGH, LOW = "bench", "bench-high", "bench-low"


def noop(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("noop", key, tag, arg)


def sleep(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


def cpu(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("cpu", key, tag, arg)


FUNCTIONS = {"noop": noop, "sleep": sleep, "cpu": cpu}


class RQSystem(System):
    name = "rq"
    has_priority = True
    conn: redis.Redis | None = None
    queues: dict[str, Queue]

    def connect(self, layout: Layout) -> None:
        self.conn = redis.Redis.from_url(self.broker_url)
        self.queues = {name: Queue(name, connection=self.conn) for name in (QUEUE, HIGH, LOW)}

    def disconnect(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def commands(self, layout: Layout) -> list[tuple[list[str], dict[str, str], int]]:
        queues = [HIGH, LOW] if layout.priority else [QUEUE]
        argv = python("-m", "rq.cli", "worker", "-u", self.broker_url, *queues)
        return [(argv, {}, i // layout.slots) for i in range(layout.workers * layout.slots)]

    def submit(self, jobs: Sequence[Job]) -> None:
        by_queue: dict[str, list[Job]] = {}
        for job in jobs:
            queue = {"high": HIGH, "low": LOW}.get(job.priority or "", QUEUE)
            by_queue.setdefault(queue, []).append(job)
        for queue, batch in by_queue.items():
            q = self.queues[queue]
            if len(batch) == 1:
                job = batch[0]
                q.enqueue(FUNCTIONS[job.kind], job.key, job.tag, job.arg)
            else:
                q.enqueue_many([Queue.prepare_data(FUNCTIONS[j.kind], (j.key, j.tag, j.arg))
                                for j in batch])
