"""Hands back leases this worker has in Redis but neither holds nor has in its inbox.

Such a lease is left behind when a connection drops between Redis popping an inbox entry
and the worker receiving it, or when a slot hit an unexpected error. The worker stays
alive, so the dispatcher would never reap it: this pass returns those tasks to their
queues. A lease must look orphaned on two passes in a row, so one a slot popped a moment
ago is never taken from it.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable

import redis
from balancer.common import signals
from balancer.common.keys import Keys
from balancer.common.retry import RETRYABLE
from balancer.common.scripts import LeasedTask, Scripts

log = logging.getLogger("worker")


class Reconciler(threading.Thread):
    def __init__(self, worker_id: str, client: redis.Redis, scripts: Scripts,
                 held: Callable[[], set[str]], leased: Callable[[], int],
                 stopping: threading.Event, interval: float = 5.0) -> None:
        super().__init__(name=f"reconcile-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.client = client
        self.keys: Keys = scripts.keys
        self.scripts = scripts
        self.held = held  # ids the worker's slots took and have not acknowledged
        self.leased = leased  # leases Redis counted lately: nothing to check when none
        self.stopping = stopping
        self.interval = interval
        self._suspects: set[tuple[str, str]] = set()

    def run(self) -> None:
        while not self.stopping.wait(self.interval):
            # During an outage the heartbeat reports it; the next pass catches up.
            if self.leased() == 0 and not self.held() and not self._suspects:
                continue
            with contextlib.suppress(*RETRYABLE):
                self.pass_once()

    def pass_once(self) -> int:
        pipe = self.client.pipeline(transaction=True)
        pipe.smembers(self.keys.leases(self.worker_id))
        pipe.lrange(self.keys.inbox(self.worker_id), 0, -1)
        members, inbox = pipe.execute()
        waiting = {lease.task_id for lease in map(signals.parse_lease, inbox) if lease}
        known = waiting | self.held()
        leases = dict(p for p in map(signals.parse_lease_member, members) if p is not None)
        suspects = {(t, token) for t, token in leases.items() if t not in known}
        orphans = sorted(suspects & self._suspects)
        self._suspects = suspects - set(orphans)
        if not orphans:
            return 0
        pipe = self.client.pipeline(transaction=False)
        for task_id, _ in orphans:
            pipe.hget(self.keys.task(task_id), "queue")
        tasks = [LeasedTask(t, q.decode(), token)
                 for (t, token), q in zip(orphans, pipe.execute()) if q is not None]
        n = self.scripts.release(self.worker_id, tasks)
        log.warning("worker=%s handed back %d tasks it had lost track of: %s", self.worker_id,
                    n, ",".join(t for t, _ in orphans[:10]))
        return n
