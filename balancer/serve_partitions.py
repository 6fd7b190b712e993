"""One `balancer serve` for a cluster of several partitions: a dispatch loop per partition.

Each partition has its own leader lease and epoch (``leader.lua`` on its keys), so a
partition's loop is the single-partition ``Dispatcher`` unchanged, on a thread of its own.
What this module adds is the share: the process registers in partition 0's
``dispatchers`` every third of a lease TTL, counts the dispatchers registered within one
TTL, and lets its loops lead at most ceil(P / live) partitions (``partitions.share``).
A loop over its share gives its partition up (its lease freed at once, so another takes
it); a loop under it takes any partition whose lease is free. A dispatcher killed
mid-run stops renewing its leases and its registration: both lapse within a TTL, and the
others' shares grow to cover its partitions.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import redis

from balancer.common import partitions
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_list
from balancer.common.retry import RETRYABLE
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.dispatcher import Dispatcher

log = logging.getLogger("balancer.dispatcher")


class PartitionedServe:
    def __init__(self, client: redis.Redis, settings: Settings, count: int) -> None:
        self.client = client
        self.settings = settings
        self.count = count
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts(client, self.keys)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._led: set[int] = set()
        self._trying: set[int] = set()  # partitions a loop is taking the lease of
        self.live = 1
        first = Dispatcher(client, settings, partition=0, count=count, claims=self)
        self.id = first.id
        self.loops = [first] + [Dispatcher(client, settings, dispatcher_id=self.id,
                                           partition=p, count=count, claims=self)
                                for p in range(1, count)]

    # -- Claims ------------------------------------------------------------------------

    def may_lead(self, partition: int, leading: bool) -> bool:
        with self._lock:
            if leading:
                if partition in partitions.to_resign(self._led, self.count, self.live):
                    self._led.discard(partition)
                    return False
                return True
            self._led.discard(partition)
            self._trying.discard(partition)  # a try an outage cut short
            if not partitions.may_take(self._led | self._trying, self.count, self.live):
                return False
            self._trying.add(partition)
            return True

    def led(self, partition: int, leading: bool) -> None:
        with self._lock:
            self._trying.discard(partition)
            if leading:
                self._led.add(partition)
            else:
                self._led.discard(partition)

    def leading(self) -> set[int]:
        with self._lock:
            return set(self._led)

    # -- running -----------------------------------------------------------------------

    def register(self) -> None:
        """Date this dispatcher in partition 0's registry; count those dated within a
        lease TTL (itself included)."""
        ttl_ms = int(self.settings.leader_ttl * 1000)
        now = int(self.scripts.time_ms())
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(self.keys.dispatchers, {self.id: now})
        pipe.zrangebyscore(self.keys.dispatchers, now - ttl_ms, "+inf")
        live = len(set(as_bytes_list(pipe.execute()[1])) | {self.id.encode()})
        with self._lock:
            changed, self.live = live != self.live, live
        if changed:
            log.info("dispatcher=%s: %d dispatchers share %d partitions (at most %d each)",
                     self.id, live, self.count, partitions.share(self.count, live))

    def run(self) -> None:
        log.info("dispatcher=%s serves %d partitions", self.id, self.count)
        threads = [threading.Thread(target=loop.run, name=f"dispatch-{loop.partition}",
                                    daemon=True) for loop in self.loops]
        try:
            self.register()
        except RETRYABLE as exc:
            log.warning("dispatcher=%s cannot register yet: %s", self.id, exc)
        for thread in threads:
            thread.start()
        shown: set[int] | None = None
        while not self.stopping.wait(self.settings.leader_ttl / 3):
            try:
                self.register()
            except RETRYABLE as exc:
                log.warning("dispatcher=%s cannot register: %s", self.id, exc)
            led = self.leading()
            if led != shown:
                shown = led
                log.info("dispatcher=%s leads partitions %s", self.id,
                         ",".join(map(str, sorted(led))) or "none")
        for loop in self.loops:
            loop.stop()
        for thread in threads:
            thread.join(10)
        with contextlib.suppress(*RETRYABLE):  # else the registration lapses on its own
            self.client.zrem(self.keys.dispatchers, self.id)

    def stop(self) -> None:
        self.stopping.set()
