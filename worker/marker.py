"""Marks tasks that run for a while as ``running`` in Redis, in batches.

Short tasks finish before anyone could look, so marking them would only cost a write
each; a task still running after ``AFTER`` seconds is worth showing (and the reaper
does not depend on this mark: it tells started tasks from the inbox). Such a task is also
long next to the prefetch horizon, so the worker is then told to make way (hand back what
was prefetched behind it).

While long runs hold every slot, the marker also sweeps the inbox about once a second:
a lease the dispatcher made before it heard of the long runs (it learns of them from the
heartbeat, which may reach it after a hand-back's signal) would otherwise wait in the
inbox until one of them ends.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Sequence

from balancer.common import prefetch
from balancer.common.retry import RETRYABLE
from balancer.common.scripts import Scripts
from balancer.common.signals import Lease
from balancer.worker.holding import Holding

# Past the prefetch horizon a task is long next to what prefetching assumed: mark it, and
# make way for what was prefetched behind it. The marker sleeps until the oldest run
# crosses it, or until a task starts when none runs.
AFTER = prefetch.LONG_RUN_S
IDLE_WAIT = 1.0
# While long runs hold every slot, the inbox is looked at this often (one LRANGE).
SWEEP_EVERY = 1.0


class Marker(threading.Thread):
    def __init__(self, worker_id: str, scripts: Scripts, holding: Holding,
                 stopping: threading.Event, make_way: Callable[[], None],
                 slots: int = 1, sweep: Callable[[], int] | None = None,
                 by_partition: Sequence[Scripts] = ()) -> None:
        super().__init__(name=f"mark-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.scripts = scripts
        self.by_partition = by_partition or (scripts,)  # a lease is marked in its own
        self.holding = holding
        self.stopping = stopping
        self.make_way = make_way
        self.slots = slots
        self.sweep = sweep  # hands back what waits in the inbox; returns how many
        self._swept = 0.0

    def run(self) -> None:
        while not self.stopping.is_set():
            self._sweep_if_blocked()
            delay = self.holding.next_long_in(AFTER)
            if delay is None:
                self.holding.wait_for_start(IDLE_WAIT)
                continue
            if delay > 0:
                self.stopping.wait(min(delay, SWEEP_EVERY))
                continue
            due = self.holding.running_longer_than(AFTER)
            if due:
                # Lost on an outage: the task only shows as assigned a little longer, and
                # what was prefetched behind it waits for it (the reconciler goes on).
                # (Started about AFTER ago: close enough for the task.started event; the
                # task.completed event carries the exact time.)
                parts: dict[int, list[Lease]] = {}
                for lease in due:
                    parts.setdefault(lease.partition, []).append(lease)
                with contextlib.suppress(*RETRYABLE):
                    for p, leases in parts.items():
                        started_ms = self.by_partition[p].now_ms() - int(AFTER * 1000)
                        self.by_partition[p].mark_running(
                            self.worker_id, [(lease.task_id, lease.token) for lease in leases],
                            [started_ms] * len(leases))
                    self.make_way()
                    self._swept = time.monotonic()

    def _sweep_if_blocked(self) -> None:
        """Long runs hold every slot: hand back what waits in the inbox behind them."""
        if self.sweep is None or self.holding.long_running() < self.slots:
            return
        now = time.monotonic()
        if now - self._swept < SWEEP_EVERY:
            return
        self._swept = now
        with contextlib.suppress(*RETRYABLE):  # the next sweep tries again
            self.sweep()
