"""The heartbeat thread: tells the dispatcher every interval that this worker lives,
what it serves, how many slots it has, and how loaded its host is (psutil)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

import psutil
import redis

from common.models import WorkerInfo
from common.scripts import Scripts
from common.settings import Settings

log = logging.getLogger("worker")


class HostLoad:
    """Samples how loaded the cores this worker may run on are, and by whom.

    ``cpu`` is how busy those cores are; ``pressure`` is the part of it not caused by this
    worker or its pool processes: other workers, other programs. The dispatcher's load
    already counts this worker's own tasks (leases per slot), so only pressure is a
    penalty. Cores come from the process's affinity, so a worker pinned to busy cores (a
    container, taskset) reports them, not the machine's average.
    """

    def __init__(self) -> None:
        affinity = getattr(os, "sched_getaffinity", None)
        self.cores = sorted(affinity(0)) if affinity else list(range(psutil.cpu_count() or 1))
        self.me = psutil.Process()
        psutil.cpu_percent(percpu=True)
        self._at = time.monotonic()
        self._own = self._own_seconds()

    def _own_seconds(self) -> float:
        total = 0.0
        for proc in [self.me, *self.me.children(recursive=True)]:
            try:
                t = proc.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def sample(self) -> tuple[float, float, float, float]:
        """(cpu, pressure, memory, 1-minute load average per core), each a fraction."""
        per_core = psutil.cpu_percent(percpu=True)
        mine = [per_core[c] for c in self.cores if c < len(per_core)] or per_core
        cpu = sum(mine) / len(mine) / 100
        now, own = time.monotonic(), self._own_seconds()
        elapsed = max(now - self._at, 1e-3)
        own_share = (own - self._own) / (elapsed * len(self.cores))
        self._at, self._own = now, own
        memory = psutil.virtual_memory().percent / 100
        try:
            load = os.getloadavg()[0] / (os.cpu_count() or 1)
        except OSError:
            load = 0.0
        return cpu, min(1.0, max(0.0, cpu - own_share)), memory, load


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
        self.leased = 0  # leases Redis counted at the last heartbeat

    def beat(self) -> bool:
        """Send one heartbeat; False when the registration had lapsed (we were reaped)."""
        existed, self.leased = self.scripts.heartbeat(self.worker_id, self.info().to_blob(),
                                                      self.ttl_ms)
        return existed

    def beat_now(self) -> None:
        """Beat out of turn: something the dispatcher should know at once has changed."""
        if not self.beat():
            log.warning("worker=%s had been declared dead; registered again", self.worker_id)

    def run(self) -> None:
        failing = False
        while not self.stopping.wait(self.settings.heartbeat_interval):
            try:
                self.beat_now()
                if failing:
                    log.info("worker=%s reached Redis again", self.worker_id)
                failing = False
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                if not failing:
                    log.error("worker=%s cannot heartbeat: %s", self.worker_id, exc)
                failing = True
