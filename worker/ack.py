"""The ack thread: stores outcomes in Redis, in batches.

Slots hand their outcomes over and go on; whatever finished while the previous call was
on the wire goes in the next one, so a busy worker pays one script call for many tasks
and an idle one no extra latency. Both scripts are idempotent for the same lease, so a
call cut off by a dropped connection is simply made again: a result is never dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from balancer.common import codec, prefetch
from balancer.common.retry import persist
from balancer.common.scripts import (
    FAIL_FAILED,
    FAIL_QUARANTINED,
    FAIL_RETRIED,
    FAIL_SKIPPED,
    Done,
    FailMode,
    Scripts,
)
from balancer.common.settings import Settings
from balancer.common.signals import Lease
from balancer.worker.holding import Holding
from balancer.worker.inbox import NOT_SENT
from balancer.worker.outcome import Outcome

log = logging.getLogger("worker")

BATCH = 200
# While other slots are running, wait this long for their results to share one call.
LINGER = 0.001


@dataclass(frozen=True)
class Finished:
    lease: Lease
    outcome: Outcome
    started_ms: int
    took: float
    done: Done | None  # set for successes


class Acker(threading.Thread):
    def __init__(self, worker_id: str, scripts: Scripts, settings: Settings,
                 holding: Holding, busy: Callable[[], int], slots: int = 0) -> None:
        super().__init__(name=f"ack-{worker_id}", daemon=True)
        self.worker_id = worker_id
        self.holding = holding
        self.busy = busy  # how many slots are running a task
        self.scripts = scripts
        self.settings = settings
        self.ttl_ms = int(settings.result_ttl * 1000)
        # The worker's slots: an ack by which it holds more leases than the quiet point
        # of what it acks (common/prefetch.py) wakes no dispatcher. 0: every ack signals.
        self.slots = slots
        self._pending: list[Finished] = []
        self._cond = threading.Condition()
        self._closing = False
        self._storing = 0  # batches on the wire

    def submit(self, finished: Finished) -> None:
        with self._cond:
            self._pending.append(finished)
            self._cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Store everything handed over so far, then stop."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self.join(timeout)

    def run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closing)
                if not self._pending and self._closing:
                    return
                if self.busy() > 0 and len(self._pending) < BATCH:
                    self._cond.wait(LINGER)
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                self._storing += 1
            try:
                self.store(batch)
            finally:
                with self._cond:
                    self._storing -= 1

    def _quiet_above(self, acked: list[Finished]) -> int:
        """The quiet point of an ack of these (-1: it signals): the largest of theirs, but
        none when one of them was leased without prefetch (its slot is due a refill)."""
        if not self.slots:
            return -1
        quiet = [prefetch.ack_quiet_above(self.slots, f.lease.depth) for f in acked]
        return -1 if -1 in quiet else max(quiet)

    def _ack(self, done: list[Done], now_ms: int, take: int, ahead: str, quiet_above: int,
             before_fetch: Callable[[tuple[Any, ...]], Any] | None
             ) -> tuple[list[bool], list[bytes]]:
        if before_fetch is not None:
            reply = before_fetch(self.scripts.ack_command(self.worker_id, done, self.ttl_ms,
                                                          now_ms, quiet_above))
            if reply is not NOT_SENT and not isinstance(reply, Exception):
                return self.scripts.acked(self.worker_id, reply)
            # Not sent, or refused (NOSCRIPT: a restarted server; an error reply, which
            # the call below meets again and persist waits out).
        return self.scripts.ack_and_take(self.worker_id, done, self.ttl_ms, now_ms, take,
                                         quiet_above, ahead)

    def idle(self) -> bool:
        """No slot running, nothing handed over, nothing on the wire: a lone result gains
        nothing from waiting for this thread, and its slot may store it at once."""
        with self._cond:
            return not self._pending and not self._storing and self.busy() == 0

    def store(self, batch: list[Finished], take: int = 0, ahead: str = "",
              before_fetch: Callable[[tuple[Any, ...]], Any] | None = None) -> list[bytes]:
        """Store a batch of outcomes (from this thread, or from a slot when idle); with
        ``take``, also take up to that many entries from the inbox, in the same call, and
        return them (the caller now holds those leases; with ``ahead``, Redis records
        those after the first under that field as not started).

        ``before_fetch`` (an idle slot's ``Inbox.send_before_fetch``): the successes'
        ack goes with the slot's next blocking fetch right behind it, in one round trip,
        and takes nothing itself. When the inbox says ``NOT_SENT`` or Redis refuses it,
        it is made as usual, without a take: the fetch to come takes the next lease. Not
        while the settings wait for replicas: WAIT must follow the ack on its own
        connection, and the ack takes as usual."""
        successes = [f for f in batch if f.done is not None]
        taken: list[bytes] = []
        if self.scripts.durability.replicas > 0:
            before_fetch = None
        if successes:
            done = [f.done for f in successes if f.done is not None]
            if before_fetch is not None:
                take, ahead = 0, ""
            quiet = self._quiet_above(successes)
            stored, taken = persist("be acknowledged", done[0].task_id,
                                    # A lambda, not a partial: a retry after an
                                    # outage stamps the time it is finally stored.
                                    lambda: self._ack(done, self.scripts.now_ms(), take,
                                                      ahead, quiet, before_fetch))
            done_ok = [f for f, ok in zip(successes, stored) if ok]
            if len(done_ok) == 1:
                f = done_ok[0]
                log.info("task=%s name=%s completed on worker=%s in %.3fs",
                         f.lease.task_id, f.lease.name, self.worker_id, f.took)
            elif done_ok:  # a batch: one line (a line per task cost a tenth of its CPU)
                log.info("task=%s completed on worker=%s: %d tasks in %.3fs",
                         ",".join(f.lease.task_id for f in done_ok), self.worker_id,
                         len(done_ok), sum(f.took for f in done_ok))
            for f, ok in zip(successes, stored):
                if not ok:
                    self._refused(f.lease)
        for f in batch:
            if f.done is None:
                self._fail(f)
            self.holding.release(f.lease.task_id)
        return taken

    def _fail(self, f: Finished) -> None:
        lease, outcome = f.lease, f.outcome
        mode: FailMode = ("quarantine" if outcome.quarantine else "crash" if outcome.crashed
                          else "skip" if outcome.mode == "skip"
                          else "again" if outcome.mode == "again"
                          else "retry" if outcome.retryable else "final")
        code = persist("be acknowledged", lease.task_id, lambda: self.scripts.fail(
            self.worker_id, lease.token, lease.task_id, lease.queue, lease.flow,
            outcome.payload, mode, self.ttl_ms, self.settings.poison_threshold, f.started_ms))
        verdict = {FAIL_RETRIED: "will run again", FAIL_FAILED: "failed",
                   FAIL_QUARANTINED: "quarantined", FAIL_SKIPPED: "skipped"}.get(code)
        if verdict is None:
            self._refused(lease)
        else:
            log.warning("task=%s %s after %.3fs: %s", lease.task_id, verdict, f.took,
                        codec.unpack_error(outcome.payload))

    def _refused(self, lease: Lease) -> None:
        log.warning("task=%s lease=%s: outcome refused, the lease was taken back (the task"
                    " was re-leased elsewhere, or its flow cancelled)", lease.task_id,
                    lease.token)
