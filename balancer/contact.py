"""Whether the dispatcher may call a silent worker dead: not right after Redis itself was
silent.

A worker is dead when its heartbeats stop for ``worker_timeout``. But a Redis that stops
answering for a while (a slow script, a fork on a large dataset, ``CLIENT PAUSE``, a
failover, an outage) keeps every worker's beats out as it keeps the dispatcher's calls
waiting: once it answers again, by its clock every worker looks silent, and reaping them
all would run each running task a second time and count a loss against it (quarantine
after ``poison_threshold``). Seen with a 5 s ``CLIENT PAUSE``: both workers reaped, the
running task run twice.

So the dispatcher notes its own silences: a step that failed, or one that took
``tolerance`` longer than it meant to wait (for signals), not counting its own CPU,
measured when the step ends and, before it calls a worker dead, on the way there. After
one, it calls nobody dead until the workers have had ``worker_timeout`` of restored
contact to beat again; a worker that really died meanwhile is reaped that much later. A
silence of this process alone (a pause of the dispatcher) earns the same grace, which
costs only that delay. Slow steps back to back (a Redis far away, a dispatcher starved
of CPU) earn graces for ``STREAK_MAX`` worker timeouts at most: a dead worker is never
kept for ever.

A pure record of times (the caller's monotonic clock), tested without Redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("balancer.dispatcher")

# Slow steps back to back earn graces for this many worker timeouts, no more.
STREAK_MAX = 2


@dataclass
class Contact:
    worker_timeout: float
    # A call that overran its wait by more than this was a silence: well below what
    # makes a beating worker look dead (the timeout less a beat's interval).
    tolerance: float
    name: str = "dispatcher"
    grace_until: float = float("-inf")
    _lost: bool = False  # a step failed; contact is back only when one succeeds
    _slow_since: float | None = None  # when the slow steps back to back began

    def call(self, began: float, ended: float, meant: float = 0.0) -> None:
        """Calls to Redis (a step on its way) began and ended then, and meant to wait
        ``meant`` seconds of that, or used them on its own CPU. No grace while slow
        steps back to back have had theirs (``step``)."""
        overran = ended - began - meant
        if overran > self.tolerance and not self._streak_spent(ended):
            self._grace(ended, f"Redis answered {overran:.1f}s late")

    def step(self, began: float, ended: float, meant: float) -> None:
        """A whole step that succeeded: it began and ended then, and meant to wait
        ``meant`` seconds of that, or used them on its own CPU."""
        overran = ended - began - meant
        if overran <= self.tolerance:
            self._slow_since = None
            return
        if self._slow_since is None:
            self._slow_since = began
        if not self._streak_spent(ended):
            self._grace(ended, f"a step waited {overran:.1f}s on Redis")

    def _streak_spent(self, now: float) -> bool:
        """Slow steps back to back have had graces for STREAK_MAX worker timeouts."""
        return (self._slow_since is not None
                and now - self._slow_since > STREAK_MAX * self.worker_timeout)

    def failed(self) -> None:
        """A step failed: Redis may be unreachable or refusing, and the workers with it."""
        self._lost = True

    def succeeded(self, now: float) -> None:
        """A step succeeded after failures: contact is back."""
        if self._lost:
            self._lost = False
            self._grace(now, "Redis answers again")

    def may_reap(self, now: float) -> bool:
        """Whether a silent worker may be called dead now."""
        return not self._lost and now >= self.grace_until

    def _grace(self, now: float, why: str) -> None:
        if now >= self.grace_until:
            log.info("%s: %s; workers get %.1fs to beat again before any is called dead",
                     self.name, why, self.worker_timeout)
        self.grace_until = max(self.grace_until, now + self.worker_timeout)
