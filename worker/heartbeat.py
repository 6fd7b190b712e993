"""The heartbeat thread: tells the dispatcher every interval that this worker lives,
what it serves, how many slots it has, and how loaded its host is (psutil)."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import psutil
import redis
from balancer.common.models import WorkerInfo
from balancer.common.retry import RETRYABLE, Backoff, describe
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.worker.leaderwatch import LeaderWatch

log = logging.getLogger("worker")

FULL_EVERY = 30  # beats: at most this many in a row are light
# Leader leases without a leader before the worker says none leads its namespace.
LEADER_PATIENCE = 3


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
    """Beats every ``heartbeat_interval``, in full or light, in every partition.

    A full beat (the heartbeat script) stores this worker's report and signals the
    dispatcher; it goes out when the report tells something new (``tells_more_than``), and
    at least every FULL_EVERY beats so that the dispatcher's counts never drift for long.
    Otherwise a light beat, one ZADD of the worker's time in ``workers``, only proves it
    lives: an idle cluster costs one command per worker per interval, not seven plus a
    dispatcher wake-up.

    With several partitions (``parts``: each partition's scripts, partition 0's first) a
    beat goes to every partition in one pipeline: one round trip per master holding them
    (redis-py's cluster pipeline groups the commands by node), instead of one per
    partition. Each partition's leases counted (``leased_in``) and Redis clock (its
    ``Scripts.clock``, set by each full beat's reply) are kept apart: a partition's
    dispatcher dates the worker on its own master's clock. One
    partition sends the single commands it always did.
    """

    def __init__(self, worker_id: str, scripts: Scripts, settings: Settings,
                 info: Callable[[], WorkerInfo], stopping: threading.Event,
                 parts: Sequence[Scripts] = ()) -> None:
        super().__init__(name=f"heartbeat-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.scripts = scripts
        self.parts = list(parts) or [scripts]
        self.settings = settings
        self.info = info
        self.stopping = stopping
        # The record outlives the light beats between two full ones; liveness is the time
        # in ``workers``, which the dispatcher checks against worker_timeout.
        self.ttl_ms = int((settings.worker_timeout
                           + (FULL_EVERY + 1) * settings.heartbeat_interval) * 1000)
        self.leased_in = [0] * len(self.parts)  # leases Redis counted at the last full beat
        self._sent: WorkerInfo | None = None  # the report of the last full beat
        self._light = 0  # light beats since
        self._soon = threading.Event()
        self.failed = threading.Event()  # set: the thread died; the worker must stop
        self.leader_watch = LeaderWatch(worker_id, settings.namespace,
                                        patience=LEADER_PATIENCE * settings.leader_ttl,
                                        every=settings.leader_ttl)

    @property
    def leased(self) -> int:
        """Leases Redis counted at the last full beat (partition 0's)."""
        return self.leased_in[0]

    def beat(self, info: WorkerInfo | None = None) -> bool:
        """Send one full heartbeat (in every partition); False when the registration had
        lapsed in some partition (we were reaped there)."""
        info = info or self.info()
        blob = info.to_blob()
        t0 = time.monotonic()
        if len(self.parts) == 1:
            replies = [self.scripts.heartbeat(self.worker_id, blob, self.ttl_ms)]
        else:
            replies = self._full_in_every(blob)
        t1 = time.monotonic()
        for p, (_, leased, redis_ms) in enumerate(replies):
            self.leased_in[p] = leased
            self.parts[p].clock.heard(redis_ms, (t0 + t1) / 2)
        self._sent, self._light = info, 0
        return all(existed for existed, _, _ in replies)

    def _full_in_every(self, blob: bytes) -> list[tuple[bool, int, int]]:
        """The heartbeat script in every partition, pipelined. A partition whose server
        does not hold the script yet (NOSCRIPT: new or restarted) beats on its own, which
        sends it the script's source once."""
        replies = self._pipelined([s.heartbeat_command(self.worker_id, blob, self.ttl_ms)
                                   for s in self.parts])
        out = []
        for scripts, reply in zip(self.parts, replies):
            if isinstance(reply, redis.exceptions.NoScriptError):
                out.append(scripts.heartbeat(self.worker_id, blob, self.ttl_ms))
            elif isinstance(reply, Exception):
                raise reply
            else:
                out.append(Scripts.heartbeat_reply(reply))
        return out

    def _pipelined(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        pipe = self.scripts.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return list(pipe.execute(raise_on_error=False))

    def _light_in_every(self) -> bool:
        """A light beat in every partition, pipelined; False when some partition no longer
        had us registered."""
        if len(self.parts) == 1:
            return self.scripts.keep_alive(self.worker_id, int(self.scripts.clock.now_ms()))
        replies = self._pipelined([s.keep_alive_command(self.worker_id, int(s.clock.now_ms()))
                                   for s in self.parts])
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return all(reply == 0 for reply in replies)

    def beat_now(self, info: WorkerInfo | None = None) -> None:
        """Beat in full out of turn: something the dispatcher should know has changed."""
        if not self.beat(info):
            log.warning("worker=%s had been declared dead (or Redis lost its record: a restart"
                        " without persistence); registered again", self.worker_id)

    def tick(self, full: bool = False) -> None:
        """The beat of one interval: light when nothing worth telling changed."""
        info = self.info()
        if (not full and self._sent is not None and self._light < FULL_EVERY - 1
                and not info.tells_more_than(self._sent)
                and self._light_in_every()):
            self._light += 1
            return
        self.beat_now(info)

    def _check_late(self, late: float) -> None:
        """Say why a beat came this late (counted from the last one's start). Past the
        timeout less an interval, the dispatcher may have called the worker dead and
        given its tasks to others."""
        if late < self.settings.worker_timeout - self.settings.heartbeat_interval:
            return
        log.warning(
            "worker=%s: its heartbeat came %.1fs late: Redis answered slowly, or this"
            " process did not run its heartbeat thread (a task of a thread pool holding"
            " Python's lock: a long call into C such as a regular expression, a sort or a"
            " parser; or the process paused or starved of CPU). The dispatcher may have"
            " called this worker dead and run its tasks elsewhere; run such tasks on the"
            " process pool (--pool process)", self.worker_id, late)

    def _look_for_leader(self, now: float) -> None:
        """Read each partition's leader key (one round trip) for ``leader_watch``; a
        failed read tells nothing (the beats report outages)."""
        pipe = self.scripts.client.pipeline(transaction=False)
        for scripts in self.parts:
            pipe.exists(scripts.keys.leader)
        try:
            led = pipe.execute()
        except RETRYABLE:
            return
        self.leader_watch.saw(now, [p for p, n in enumerate(led) if not n])

    def hurry(self) -> None:
        """Beat in full now rather than at the end of the interval (from another thread)."""
        self._soon.set()

    def run(self) -> None:
        """Beat until stopped. A Redis error (an outage, or an error reply such as OOM)
        is retried at the next interval, and the first beat after it goes out in full:
        if the dispatcher declared this worker dead meanwhile, that beat registers it
        again. Any other error ends the thread; the worker then stops (``failed``), as a
        worker nobody hears from must not go on running tasks."""
        backoff = Backoff()
        interval = self.settings.heartbeat_interval
        last = time.monotonic()
        try:
            while True:
                hurried = self._soon.wait(interval)
                self._soon.clear()
                if self.stopping.is_set():
                    break
                now = time.monotonic()
                if backoff.delay == 0:  # a failed beat's lateness is told as a failure
                    self._check_late(now - last - interval)
                last = now
                try:
                    self.tick(full=hurried or backoff.delay > 0)
                except RETRYABLE as exc:
                    if backoff.failed():
                        log.error("worker=%s cannot heartbeat: %s", self.worker_id,
                                  describe(exc))
                    continue
                if backoff.recovered():
                    log.info("worker=%s reached Redis again", self.worker_id)
                if self.leader_watch.due(now):
                    self._look_for_leader(now)
        except Exception:
            log.critical("worker=%s: the heartbeat thread failed; stopping the worker",
                         self.worker_id, exc_info=True)
            self.failed.set()
