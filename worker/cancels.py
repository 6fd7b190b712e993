"""The worker's cancel listener: stops the runs of tasks whose flow was cancelled.

A cancel (``balancer/cancel.py``) takes the lease of every task of the flow; for a task
this worker had already taken out of its inbox it pushes ``task|token`` onto
``cancels:<worker>``. This thread waits on that list with a blocking pop of its own
connection, so a cancel reaches a running task at once, and no task pays anything for it:
an idle worker sends one command per ``BLOCK`` seconds.

What it does with a notice is the worker's (``Worker.stop_cancelled``): a process-pool
child running the task is killed and replaced, a thread-pool task is abandoned. A notice
for a lease the worker does not run yet (taken, about to start) is tried again for
``RETRY_FOR`` seconds; the lease is gone in Redis either way, so a run that slips through
has its result refused.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import redis
from balancer.common import signals
from balancer.common.connection import Direct, MasterMoved
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_list, as_list
from balancer.common.retry import RETRYABLE, Backoff, describe

log = logging.getLogger("worker")

BLOCK = 30.0
READ_MARGIN = 5.0
RETRY_FOR = 5.0  # seconds a notice for a lease not found running is tried again
RETRY_EVERY = 0.1
END = b""  # pushed by ``close`` to end a blocked pop


class CancelListener(threading.Thread):
    def __init__(self, worker_id: str, client: redis.Redis, keys: Keys,
                 stop_run: Callable[[str, str], bool], stopped: threading.Event) -> None:
        super().__init__(name=f"cancels-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.client = client
        self.key = keys.cancels(worker_id)
        self.stop_run = stop_run  # (task id, token) -> whether a run of it was found
        self.stopped = stopped
        self.direct = Direct(client, read_timeout=BLOCK + READ_MARGIN, route=self.key)
        self._backoff = Backoff()
        self._pending: dict[tuple[str, str], float] = {}  # notice -> tried until

    def run(self) -> None:
        while not self.stopped.is_set():
            block = RETRY_EVERY if self._pending else BLOCK
            try:
                reply = self.direct.call("BLMPOP", block, 1, self.key, "LEFT", "COUNT", 100)
            except MasterMoved:  # the pool said so: read again at once, from the new one
                continue
            except RETRYABLE as exc:
                if self._backoff.failed():
                    log.error("worker=%s cannot read its cancels: %s", self.worker_id,
                              describe(exc))
                self.stopped.wait(self._backoff.delay)
                continue
            if self._backoff.recovered():
                log.info("worker=%s reads its cancels again", self.worker_id)
            now = time.monotonic()
            for raw in as_bytes_list(as_list(reply)[1]) if reply else []:
                pair = signals.parse_lease_member(raw) if raw != END else None
                if pair is not None:
                    self._pending.setdefault(pair, now + RETRY_FOR)
            self._try(now)

    def _try(self, now: float) -> None:
        for pair, until in list(self._pending.items()):
            if self.stop_run(*pair):
                del self._pending[pair]
            elif now >= until:
                del self._pending[pair]
                log.info("task=%s lease=%s cancelled; this worker=%s does not run it",
                         pair[0], pair[1], self.worker_id)

    def close(self) -> None:
        """End a blocked pop (``stopped`` must be set)."""
        try:
            self.client.rpush(self.key, END)
        except RETRYABLE as exc:
            log.error("worker=%s cannot end its cancel listener: %s", self.worker_id,
                      describe(exc))
