"""What a worker holds: leases taken out of its inbox and not yet acknowledged, and how
long its tasks take per queue.

"Held" is the worker's side: what it took and has not acknowledged (``held_ids`` here, on
each slot and on the worker). "Leased" is Redis's side: the members of ``leases:<worker>``
(inbox entries included), which the dispatcher counts. With a process pool, the children
hold their own leases; the supervisor's holding sees only the long runs it is shown.

Several threads share this: slots take leases and start them, the ack thread
releases them, the marker and the reconciler read them, the heartbeat reports durations
(of the queues run in the last FORGET_AFTER seconds).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from balancer.common import prefetch
from balancer.common.signals import Lease

EWMA = 0.2
# A queue whose tasks this worker has not run for this long (seconds) is left out of its
# reports, and its mean forgotten: a worker serving a queue per tenant would otherwise
# send (and the dispatcher parse) the mean of every queue it ever ran at every full beat.
FORGET_AFTER = 600.0


class Holding:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._leases: dict[str, Lease] = {}
        self._started: dict[str, float] = {}  # task id -> monotonic start, until marked
        self._long: set[str] = set()  # marked: running past the marker's threshold
        self._wake_marker = threading.Event()  # ends the marker's idle wait
        self._durations: dict[str, float] = {}  # queue -> mean ms
        self._told: dict[str, float] = {}  # queue -> the mean last given as news
        self._ran: dict[str, float] = {}  # queue -> when its mean last changed (clock)
        # Called (outside the lock) when the dispatcher should hear of durations at once:
        # it prefetches nothing for a queue until it knows that queue's tasks are short.
        self.on_news: Callable[[], None] = lambda: None

    def add(self, lease: Lease) -> None:
        with self._lock:
            self._leases[lease.task_id] = lease

    def start(self, task_id: str, at: float | None = None, started_ms: int = 0) -> None:
        """A slot starts running the task at ``started_ms`` (Redis's clock), or a pool
        child's watcher reports one it started ``at``, a time.monotonic(); the marker looks
        when it may turn long."""
        with self._lock:
            self._started[task_id] = time.monotonic() if at is None else at
        self._wake_marker.set()

    def next_long_in(self, seconds: float) -> float | None:
        """Seconds until the oldest run not reported yet passes ``seconds``; None when no
        such run goes on."""
        with self._lock:
            if not self._started:
                return None
            return max(0.0, min(self._started.values()) + seconds - time.monotonic())

    def wait_for_start(self, timeout: float) -> None:
        """Sleep until a task starts (or ``timeout``): an idle worker's marker costs
        nothing."""
        self._wake_marker.wait(timeout)
        self._wake_marker.clear()

    def finish(self, queue: str, took_ms: float) -> float:
        """A run of the queue's tasks took ``took_ms``: their mean run time now."""
        with self._lock:
            mean = self._durations.get(queue)
            now = took_ms if mean is None else mean + EWMA * (took_ms - mean)
        self.learn(queue, now)
        return now

    def learn(self, queue: str, mean_ms: float) -> None:
        """The mean run time of the queue's tasks is now ``mean_ms`` (a pool child tells
        its supervisor this way)."""
        with self._lock:
            now = self._durations[queue] = mean_ms
            self._ran[queue] = self._clock()
            told = self._told.get(queue)
            news = prefetch.news(prefetch.prefetch_depth(now),
                                 None if told is None else prefetch.prefetch_depth(told))
            if news:
                self._told[queue] = now
        if news:
            self.on_news()

    def release(self, task_id: str) -> None:
        with self._lock:
            self._leases.pop(task_id, None)
            self._started.pop(task_id, None)
            self._long.discard(task_id)

    def lease(self, task_id: str) -> Lease | None:
        with self._lock:
            return self._leases.get(task_id)

    def leases(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def held_ids(self) -> set[str]:
        with self._lock:
            return set(self._leases)

    def running_longer_than(self, seconds: float) -> list[Lease]:
        """Leases started over ``seconds`` ago and not reported yet; reported from now on."""
        cutoff = time.monotonic() - seconds
        with self._lock:
            due = [t for t, at in self._started.items() if at <= cutoff]
            for t in due:
                del self._started[t]
            self._long.update(due)
            return [self._leases[t] for t in due if t in self._leases]

    def long_running(self) -> int:
        """How many tasks ``running_longer_than`` reported are still running."""
        with self._lock:
            return len(self._long)

    def runs_short_tasks(self) -> bool:
        """Whether a queue of this worker has tasks short enough to be prefetched."""
        with self._lock:
            return any(prefetch.may_prefetch(ms) for ms in self._durations.values())

    def durations(self) -> dict[str, float]:
        """The mean run time of each queue run within FORGET_AFTER; the others forgotten."""
        cutoff = self._clock() - FORGET_AFTER
        with self._lock:
            for q in [q for q, at in self._ran.items() if at < cutoff]:
                del self._ran[q], self._durations[q]
                self._told.pop(q, None)
            return {q: round(ms, 3) for q, ms in self._durations.items()}

    def __len__(self) -> int:
        with self._lock:
            return len(self._leases)
