"""Redis's clock as this process reckons it: read once (TIME, where the scripts run), then
carried on by the local monotonic clock until it is read again.

Times written by many hosts are compared with one another and with Redis's clock: a
task's place in its queue and the age that raises its queue's priority (aging), a
worker's last beat, a delayed retry's due time. Read from each host's wall clock, they
are as wrong as that clock: a client one hour behind had its tasks overtake every
priority (their queue's head looked an hour old: 60 levels of aging), and a dispatcher
whose clock stepped 20 s forward (NTP correcting it, a VM resumed) called every live
worker dead. Reckoned from Redis's clock on the monotonic clock, neither a host's offset
nor a step of its clock moves anything; the monotonic clock's drift is corrected at each
reading.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

# How long a reading is carried on before it is read again (seconds).
RESYNC = 60.0


@dataclass
class RedisClock:
    read: Callable[[], float]  # Redis's clock in ms (server_time_ms): one round trip
    _offset_ms: float | None = None  # Redis's ms less our monotonic ms, at the last read
    _read_at: float = float("-inf")  # our monotonic clock then

    def sync(self) -> None:
        """Read Redis's clock now."""
        self.heard(self.read(), time.monotonic())

    def heard(self, redis_ms: float, at: float) -> None:
        """A reading of Redis's clock that came with another reply (a heartbeat's), as of
        ``at`` on our monotonic clock: it counts as a read."""
        self._read_at = at
        self._offset_ms = redis_ms - at * 1000

    def now_ms(self) -> float:
        """Redis's clock now, as of the last reading (the local wall clock before any)."""
        if self._offset_ms is None:
            return time.time() * 1000
        return time.monotonic() * 1000 + self._offset_ms

    def due(self) -> bool:
        """Whether it is time to read Redis's clock again."""
        return time.monotonic() - self._read_at > RESYNC

    def fresh_ms(self) -> float:
        """Redis's clock now, read again first when due. A Redis that cannot answer (or a
        user that may not read its clock) leaves the last reading in use: the caller's
        own call will say what is wrong, or wait it out."""
        if self.due():
            try:
                self.sync()
            except redis.RedisError:  # read again after RESYNC, not at every call
                self._read_at = time.monotonic()
        return self.now_ms()
