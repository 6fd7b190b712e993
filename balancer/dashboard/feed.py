"""Tails the events stream in a thread (every partition's, merged by time): feeds the
metrics' counters, the throughput chart and the dashboard's list of recent events."""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import redis

from balancer import eventlog
from balancer.common import events, partitions
from balancer.common.connection import server_time_ms
from balancer.common.keys import Keys
from balancer.common.redisclock import RedisClock
from balancer.dashboard.metrics import EventMetrics

log = logging.getLogger("balancer.dashboard")

BUCKET_S = 5  # the throughput chart's resolution
WINDOW_S = 600  # and its span: the last 10 minutes
RECENT = 200  # events kept for the page


@dataclass
class Throughput:
    """Tasks settled per BUCKET_S over the last WINDOW_S, by outcome."""

    buckets: dict[int, dict[str, int]] = field(default_factory=dict)

    def add(self, event: events.Event) -> None:
        outcome = {events.TASK_COMPLETED: "completed", events.TASK_FAILED: "failed"}.get(
            event.kind)
        if outcome is None:
            return
        start = event.at_ms // 1000 // BUCKET_S * BUCKET_S
        counts = self.buckets.setdefault(start, {"completed": 0, "failed": 0})
        counts[outcome] += 1

    def series(self, now_s: float) -> list[dict[str, int]]:
        """Every bucket of the window, oldest first, empty ones included."""
        last = int(now_s) // BUCKET_S * BUCKET_S
        first = last - WINDOW_S + BUCKET_S
        for old in [b for b in self.buckets if b < first]:
            del self.buckets[old]
        return [{"t": b, **self.buckets.get(b, {"completed": 0, "failed": 0})}
                for b in range(first, last + 1, BUCKET_S)]


class Feed(threading.Thread):
    def __init__(self, client: redis.Redis, keys: Keys, metrics: EventMetrics) -> None:
        super().__init__(name="events-feed", daemon=True)
        self.client = client
        self.keys = keys
        self.metrics = metrics
        self.throughput = Throughput()
        self.recent: collections.deque[events.Event] = collections.deque(maxlen=RECENT)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.reader: eventlog.Reader | eventlog.Merged = eventlog.Reader(client, keys)
        # Events are dated by Redis's clock: so is the chart's window, whatever this
        # host's clock says (one an hour ahead drew an empty chart).
        self.clock = RedisClock(lambda: server_time_ms(client, keys.events))

    def backfill(self) -> None:
        """The chart and the recent list from what the stream holds now; counters start
        from what comes next (they count what this process sees: see metrics.py)."""
        every = partitions.every(self.client, self.keys)
        past, lasts = eventlog.latest_all(self.client, every, 10_000)  # merged by time
        cutoff = self.clock.fresh_ms() - WINDOW_S * 1000
        with self.lock:
            for event in past:
                if event.at_ms >= cutoff:
                    self.throughput.add(event)
            self.recent.extend(past[-RECENT:])
        self.reader = eventlog.follower(self.client, every, lasts)

    def run(self) -> None:
        backed = False
        while not self.stopping.is_set():
            try:
                if not backed:
                    self.backfill()
                    backed = True
                found = self.reader.read(block_ms=500)
            except redis.RedisError as exc:  # an outage, or a user not allowed to read
                log.warning("events feed: %s; retrying in 1 s", exc)
                self.stopping.wait(1.0)
                continue
            with self.lock:
                for event in found:
                    self.metrics.observe(event)
                    self.throughput.add(event)
                    self.recent.append(event)
                self.metrics.skipped(self.reader.skipped)

    def snapshot(self) -> dict[str, Any]:
        now_s = self.clock.fresh_ms() / 1000  # a reading a minute, outside the lock
        with self.lock:
            return {"throughput": self.throughput.series(now_s),
                    "bucket_s": BUCKET_S,
                    "events": [e.to_dict() for e in list(self.recent)[-50:]][::-1]}

    def stop(self) -> None:
        self.stopping.set()
