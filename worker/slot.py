"""One execution slot: pop a leased task from the inbox, start it, run it, acknowledge it.

Every call to Redis is fenced by the attempt number the dispatcher leased the task with;
a refused start or ack means the lease moved on (we were presumed dead) and is dropped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import redis

from common import codec, signals
from common.codec import CodecError, ErrorInfo
from common.keys import Keys
from common.models import TaskState
from common.scripts import FAIL_FAILED, FAIL_QUARANTINED, FAIL_RETRIED, Child, FailMode, Scripts
from common.settings import Settings
from worker.executor import Outcome
from worker.pool import Runner

log = logging.getLogger("worker")

FETCH_TIMEOUT = 1.0
T = TypeVar("T")


@dataclass(frozen=True)
class Lease:
    task_id: str
    attempt: int
    name: str
    queue: str
    fn: str
    args: bytes
    timeout: float | None
    flow: str
    children: list[Child]


class Slot(threading.Thread):
    def __init__(self, index: int, worker_id: str, client: redis.Redis, settings: Settings,
                 runner: Runner, stopping: threading.Event) -> None:
        super().__init__(name=f"slot-{index}", daemon=True)
        self.worker_id = worker_id
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts(client, self.keys)
        self.runner = runner
        self.stopping = stopping
        self.current: str | None = None  # the task id this slot holds, if any
        self.ttl_ms = int(settings.result_ttl * 1000)

    @property
    def busy(self) -> bool:
        return self.current is not None

    def run(self) -> None:
        inbox = self.keys.inbox(self.worker_id)
        while not self.stopping.is_set():
            try:
                item = self.client.blpop([inbox], timeout=FETCH_TIMEOUT)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.error("worker=%s cannot fetch: %s", self.worker_id, exc)
                self.stopping.wait(FETCH_TIMEOUT)
                continue
            if item is None:
                continue
            if self.stopping.is_set():  # popped while stopping: leave it for the hand-back
                self.client.lpush(inbox, item[1])
                break
            entry = signals.parse_inbox_entry(item[1])
            if entry is None:
                log.error("worker=%s dropped unreadable inbox entry %r", self.worker_id,
                          item[1][:80])
                continue
            self.current = entry[0]
            try:
                self.handle(*entry)
            except Exception:
                # The lease stays with this worker; reconciliation hands it back.
                log.exception("task=%s: unexpected error in worker=%s", entry[0], self.worker_id)
            finally:
                self.current = None

    def _persist(self, what: str, task_id: str, call: Callable[[], T]) -> T:
        """Run an idempotent call, retrying while Redis is unreachable: a started task or a
        computed result is never dropped because a connection broke."""
        backoff = 0.1
        while True:
            try:
                return call()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.error("task=%s cannot %s (%s); retrying in %.1fs", task_id, what, exc,
                          backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def handle(self, task_id: str, attempt: int) -> None:
        lease = self._start(task_id, attempt)
        if lease is None:
            return
        started = time.monotonic()
        log.info("task=%s name=%s started on worker=%s attempt=%d", task_id, lease.name,
                 self.worker_id, attempt)
        try:
            args = self._with_upstream_results(lease)
        except LookupError as exc:
            outcome = Outcome.failure(ErrorInfo("balancer.UpstreamResultMissing", str(exc)))
        else:
            outcome = self.runner.run(lease.fn, args, lease.timeout)
        self._acknowledge(lease, outcome, time.monotonic() - started)

    def _start(self, task_id: str, attempt: int) -> Lease | None:
        grace_ms = int(self.settings.timeout_grace * 1000)
        spec = self._persist("start", task_id, lambda: self.scripts.start(
            task_id, self.worker_id, attempt, grace_ms))
        if spec is None:
            log.warning("task=%s attempt=%d is no longer leased to worker=%s; skipped",
                        task_id, attempt, self.worker_id)
            return None
        fn, args, timeout, queue, flow, children, name = spec
        try:
            kids = [Child(str(c), str(q)) for c, q in codec.unpack(children or b"\x90")]
        except (CodecError, ValueError, TypeError):
            kids = []
        return Lease(
            task_id=task_id, attempt=attempt,
            name=(name or b"?").decode(), queue=(queue or b"default").decode(),
            fn=(fn or b"").decode(), args=args or b"",
            timeout=float(timeout) if timeout else None,
            flow=(flow or b"").decode(), children=kids,
        )

    def _with_upstream_results(self, lease: Lease) -> bytes:
        """The argument bytes with every upstream reference replaced by its result."""
        try:
            args, kwargs = codec.decode_call(lease.args)
        except CodecError:
            return lease.args  # the executor reports the bad payload on the task
        refs = sorted(codec.upstream_refs([args, kwargs]))
        if not refs:
            return lease.args
        pipe = self.client.pipeline(transaction=False)
        for ref in refs:
            pipe.hmget(self.keys.task(ref), ["state", "result"])
        results = {}
        for ref, (state, blob) in zip(refs, self._persist("read results", lease.task_id,
                                                          pipe.execute)):
            if state is None or state.decode() != TaskState.COMPLETED or blob is None:
                raise LookupError(f"the result of upstream task {ref} is not available"
                                  f" (state {state.decode() if state else 'expired'})")
            results[ref] = codec.unpack(blob)
        return codec.pack(codec.substitute([args, kwargs], results))

    def _acknowledge(self, lease: Lease, outcome: Outcome, took: float) -> None:
        """Store the outcome; both scripts are idempotent for the same lease, so a call
        whose reply was lost can simply be made again."""
        if outcome.ok:
            accepted = self._persist("be acknowledged", lease.task_id,
                                     lambda: self.scripts.complete(
                                         lease.task_id, self.worker_id, lease.attempt,
                                         lease.flow, outcome.payload, lease.children,
                                         self.ttl_ms))
            if accepted:
                log.info("task=%s completed in %.3fs", lease.task_id, took)
            else:
                self._refused(lease)
            return
        mode: FailMode = "crash" if outcome.crashed else "retry" if outcome.retryable else "final"
        code = self._persist("be acknowledged", lease.task_id, lambda: self.scripts.fail(
            lease.task_id, self.worker_id, lease.attempt, lease.flow, lease.queue,
            outcome.payload, mode, self.ttl_ms, self.settings.poison_threshold))
        verdict = {FAIL_RETRIED: "will run again", FAIL_FAILED: "failed",
                   FAIL_QUARANTINED: "quarantined after killing its process"}.get(code)
        if verdict is None:
            self._refused(lease)
        else:
            log.warning("task=%s %s after %.3fs: %s", lease.task_id, verdict, took,
                        codec.unpack_error(outcome.payload))

    def _refused(self, lease: Lease) -> None:
        log.warning("task=%s attempt=%d: outcome refused, the task was re-leased elsewhere",
                    lease.task_id, lease.attempt)
