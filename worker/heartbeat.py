"""The heartbeat thread: tells the dispatcher every interval that this worker lives,
what it serves, how many slots it has, and how loaded its host is (psutil)."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

import psutil
import redis

from common.models import WorkerInfo
from common.scripts import Scripts
from common.settings import Settings

log = logging.getLogger("worker")


def host_load() -> tuple[float, float, float]:
    """(cpu use, memory use, 1-minute load average per core), each as a fraction."""
    cpu = psutil.cpu_percent(interval=None) / 100
    memory = psutil.virtual_memory().percent / 100
    try:
        load = os.getloadavg()[0] / (os.cpu_count() or 1)
    except OSError:
        load = 0.0
    return cpu, memory, load


class Heartbeat(threading.Thread):
    def __init__(self, worker_id: str, scripts: Scripts, settings: Settings,
                 info: Callable[[], WorkerInfo], stopping: threading.Event) -> None:
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.scripts = scripts
        self.settings = settings
        self.info = info
        self.stopping = stopping
        self.ttl_ms = int(settings.worker_timeout * 1000)

    def beat(self) -> bool:
        """Send one heartbeat; False when the registration had lapsed (we were reaped)."""
        existed, _ = self.scripts.heartbeat(self.worker_id, self.info().to_blob(), self.ttl_ms)
        return existed

    def run(self) -> None:
        failing = False
        while not self.stopping.wait(self.settings.heartbeat_interval):
            try:
                if not self.beat():
                    log.warning("worker=%s had been declared dead; registered again",
                                self.worker_id)
                if failing:
                    log.info("worker=%s reached Redis again", self.worker_id)
                failing = False
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not failing:
                    log.error("worker=%s cannot heartbeat: %s", self.worker_id, exc)
                failing = True
