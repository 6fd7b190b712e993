"""Our system: ``balancer serve`` plus ``worker start`` commands, tasks in ``ours_tasks``."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import redis

from balancer import Flow
from bench.compare import ours_tasks
from bench.compare.base import ROOT, Job, Launcher, Layout, System, python

NAMESPACE = "bench"
AGING_ON_S = 1.0
AGING_OFF_S = 1e9
SHUTDOWN_GRACE_S = 5


class Ours(System):
    name = "ours"
    has_priority = True
    has_aging = True

    def __init__(self, logdir: Path, record_url: str) -> None:
        super().__init__(logdir, record_url)
        self.client: redis.Redis | None = None
        self.dispatcher_pid: int | None = None
        self.aging_s: float | None = None

    def env(self) -> dict[str, str]:
        env = {"BALANCER_REDIS_URL": self.broker_url, "BALANCER_NAMESPACE": NAMESPACE,
               "BALANCER_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE_S)}
        if self.aging_s is not None:
            env["BALANCER_AGING_SECONDS"] = repr(self.aging_s)
        keys = os.environ.get("BALANCER_SIGNING_KEYS")
        if keys:  # signing on: the workers check what this process signs
            env["BALANCER_SIGNING_KEYS"] = keys
        return env

    def connect(self, layout: Layout) -> None:
        # run.wait() blocks up to 5 s per call: a longer socket timeout than redis-py's.
        self.client = redis.Redis.from_url(self.broker_url, socket_timeout=30)
        self.aging_s = (AGING_ON_S if layout.aging else AGING_OFF_S) if layout.priority else None

    def disconnect(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None
        self.dispatcher_pid = None

    def before_workers(self, launcher: Launcher, layout: Layout) -> None:
        env = {**launcher.env, **self.env()}
        if layout.priority:
            for queue, priority in ((ours_tasks.HIGH, 1), (ours_tasks.LOW, 0)):
                subprocess.run(python("-m", "balancer.cli", "queue", "set", queue,
                                      "--priority", str(priority)),
                               cwd=ROOT, env=env, check=True, timeout=60,
                               capture_output=True)
        proc = launcher.spawn("ours-serve", python("-m", "balancer.cli", "serve"), self.env())
        self.dispatcher_pid = proc.pid

    def dispatcher_pids(self) -> list[int]:
        return [self.dispatcher_pid] if self.dispatcher_pid is not None else []

    def queues(self, layout: Layout) -> list[str]:
        queues = [ours_tasks.QUEUE]
        if layout.priority:
            queues += [ours_tasks.HIGH, ours_tasks.LOW]
        return queues

    def worker_argv(self, layout: Layout, queues: Sequence[str] | None = None) -> list[str]:
        argv = python("-m", "balancer.worker.cli", "start", "--concurrency", str(layout.slots),
                      "--pool", "process", "--import", "bench.compare.ours_tasks")
        for q in queues or self.queues(layout):
            argv += ["--queue", q]
        return argv

    def commands(self, layout: Layout) -> list[tuple[list[str], dict[str, str], int]]:
        return [(self.worker_argv(layout), self.env(), i) for i in range(layout.workers)]

    def submit(self, jobs: Sequence[Job]) -> None:
        with Flow("bench") as flow:
            for job in jobs:
                fn = (ours_tasks.BY_PRIORITY[job.priority] if job.priority
                      else ours_tasks.BY_KIND[job.kind])
                fn(job.key, job.tag, job.arg)
        flow.submit(self.client, namespace=NAMESPACE)
