"""Celery on Redis: ``celery -A bench.compare.celery_app worker -c SLOTS`` per worker.

``celery`` runs the defaults (prefetch multiplier 4, early acks); ``celery-fair`` the
settings Celery's optimizing guide recommends for long tasks: ``-O fair``,
``worker_prefetch_multiplier=1`` and ``task_acks_late=True``. Priorities use the Redis
transport's priority steps (0 is served first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from celery import Celery

from bench.compare import work
from bench.compare.base import Job, Layout, System, python

HIGH, LOW = 0, 9
PRIORITY_OPTIONS = {"queue_order_strategy": "priority", "priority_steps": list(range(10)),
                    "sep": ":"}


def make_app(url: str, fair: bool, priority: bool) -> Celery:
    app = Celery("bench_compare", broker=url)
    app.conf.broker_connection_retry_on_startup = True
    if fair:
        app.conf.worker_prefetch_multiplier = 1
        app.conf.task_acks_late = True
    if priority:
        app.conf.broker_transport_options = PRIORITY_OPTIONS
    return app


app = make_app(os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:1/0"),
               fair=os.environ.get("BENCH_CELERY_FAIR") == "1",
               priority=os.environ.get("BENCH_PRIORITY") == "1")


@app.task(name="bench.noop")
def noop(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("noop", key, tag, arg)


@app.task(name="bench.sleep")
def sleep(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


@app.task(name="bench.cpu")
def cpu(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("cpu", key, tag, arg)


class CelerySystem(System):
    name = "celery"
    fair = False
    has_priority = True
    client: Celery | None = None

    def connect(self, layout: Layout) -> None:
        self.client = make_app(self.broker_url, self.fair, layout.priority)

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def commands(self, layout: Layout) -> list[tuple[list[str], dict[str, str], int]]:
        env = {"BENCH_CELERY_FAIR": "1" if self.fair else "0",
               "BENCH_PRIORITY": "1" if layout.priority else "0"}
        out = []
        for i in range(layout.workers):
            argv = python("-m", "celery", "-A", "bench.compare.celery_app", "worker",
                          "-c", str(layout.slots), "-P", "prefork", "-n", f"w{i}@bench",
                          "-l", "WARNING")
            if self.fair:
                argv += ["-O", "fair"]
            out.append((argv, env, i))
        return out

    def submit(self, jobs: Sequence[Job]) -> None:
        assert self.client is not None
        for job in jobs:
            options = {}
            if job.priority:
                options["priority"] = HIGH if job.priority == "high" else LOW
            self.client.send_task(f"bench.{job.kind}", args=(job.key, job.tag, job.arg),
                                  **options)


class CeleryFair(CelerySystem):
    name = "celery-fair"
    fair = True
