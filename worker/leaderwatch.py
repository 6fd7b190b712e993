"""Whether a dispatcher leads the worker's namespace: said once when none has for a while,
and once when one does again.

Tasks reach a worker only through ``balancer serve``. A worker started on another Redis
or namespace than serve's (a typo in BALANCER_NAMESPACE, a forgotten database number in
the URL), or with no serve running at all, waited idle and said nothing: its operator
saw a healthy worker, its users tasks that never ran. The heartbeat thread looks for the
leader's key now and then (one GET per partition); this record decides what to say.

A pure record of times (the caller's monotonic clock), tested without Redis.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger("worker")


@dataclass
class LeaderWatch:
    worker_id: str
    namespace: str
    # How long no leader may be seen before it is said: a few leader leases, so that a
    # failover (a standby takes over within one) or a serve started after the workers
    # is never reported.
    patience: float
    # How often to look.
    every: float
    _unled_since: float | None = None  # when no leader was first seen, of this spell
    _said = False
    _looked_at = float("-inf")

    def due(self, now: float) -> bool:
        """Whether to look for the leader now (at most every ``every``)."""
        return now - self._looked_at >= self.every

    def saw(self, now: float, unled: list[int]) -> None:
        """What a look found: the partitions no dispatcher leads (none: all are led)."""
        self._looked_at = now
        if not unled:
            if self._said:
                log.info("worker=%s: a dispatcher leads namespace %r again; tasks come",
                         self.worker_id, self.namespace)
            self._unled_since, self._said = None, False
            return
        if self._unled_since is None:
            self._unled_since = now
        if not self._said and now - self._unled_since >= self.patience:
            self._said = True
            where = "" if unled == [0] else f" (partitions {', '.join(map(str, unled))})"
            log.warning(
                "worker=%s: no dispatcher has led namespace %r%s for %.0fs: tasks reach"
                " workers only through `balancer serve`, run on the same Redis (and"
                " database) with the same BALANCER_NAMESPACE", self.worker_id,
                self.namespace, where, now - self._unled_since)
