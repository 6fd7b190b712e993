"""The fetch thread: moves leases from the worker's inbox in Redis to idle slots.

It takes no more entries than there are idle slots, so leases the dispatcher prefetched
stay visible in Redis (and go back to their queue if the worker dies or stops) until a
slot is free to run them. One BLMPOP both waits for work and takes a batch.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import redis

from common import signals
from common.keys import Keys
from common.signals import Lease

log = logging.getLogger("worker")

# Long blocks keep an idle worker quiet; shutdown pushes SENTINEL to wake the fetcher.
# Kept under redis-py's default socket timeout (5 s).
FETCH_TIMEOUT = 4.0
SENTINEL = b""


class IdleSlots:
    """How many slots wait for a task; the fetcher waits on it."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._cond = threading.Condition()

    def take_all(self, timeout: float) -> int:
        with self._cond:
            if self._count == 0:
                self._cond.wait(timeout)
            taken, self._count = self._count, 0
            return taken

    def give(self, count: int = 1) -> None:
        """Return ``count`` slots; 0 only wakes the waiter (to notice it must stop)."""
        with self._cond:
            self._count += count
            self._cond.notify()


class Fetcher(threading.Thread):
    def __init__(self, worker_id: str, client: redis.Redis, keys: Keys, idle: IdleSlots,
                 ready: queue.Queue[Lease], on_take: Callable[[Lease], None],
                 stopping: threading.Event) -> None:
        super().__init__(name=f"fetch-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.client = client
        self.inbox = keys.inbox(worker_id)
        self.idle = idle
        self.ready = ready
        self.stopping = stopping
        self.on_take = on_take  # the worker now holds this lease

    def wake(self) -> None:
        """Make a blocked fetch return now (the worker is stopping)."""
        self.client.lpush(self.inbox, SENTINEL)

    def run(self) -> None:
        while not self.stopping.is_set():
            wanted = self.idle.take_all(FETCH_TIMEOUT)
            if not wanted:
                continue
            try:
                reply = self.client.blmpop(FETCH_TIMEOUT, 1, self.inbox, direction="LEFT",
                                           count=wanted)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.error("worker=%s cannot fetch: %s", self.worker_id, exc)
                self.idle.give(wanted)
                self.stopping.wait(FETCH_TIMEOUT)
                continue
            wanted -= self.deliver(reply[1] if reply else [])
            if wanted:
                self.idle.give(wanted)

    def deliver(self, entries: list[bytes]) -> int:
        """Hand inbox entries taken from Redis (here, or by a slot's ack) to the slots;
        how many leases they held."""
        delivered = 0
        for raw in entries:
            if raw == SENTINEL:
                continue
            lease = signals.parse_lease(raw)
            if lease is None:
                log.error("worker=%s dropped unreadable inbox entry %r", self.worker_id,
                          raw[:80])
                continue
            self.on_take(lease)
            self.ready.put(lease)
            delivered += 1
        return delivered
