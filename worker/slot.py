"""One execution slot: take a lease from the inbox, run it, pass the outcome to the ack
thread (or store it itself when alone). Upstream results a task receives as arguments are
read here."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import redis
from balancer.common import codec, signing
from balancer.common.codec import CodecError, ErrorInfo
from balancer.common.keys import Keys
from balancer.common.models import TaskState
from balancer.common.retry import persist
from balancer.common.scripts import Child, Done
from balancer.common.signals import Lease
from balancer.worker import caching, executor, runfacts, statehooks
from balancer.worker.ack import Acker, Finished
from balancer.worker.holding import Holding
from balancer.worker.inbox import Inbox
from balancer.worker.looping import LoopStore
from balancer.worker.outcome import Outcome
from balancer.worker.pool import Runner

from balancer import runcontext

log = logging.getLogger("worker")

_SETTLED_WITHOUT_RESULT = frozenset({TaskState.SKIPPED, TaskState.FAILED,
                                     TaskState.UPSTREAM_FAILED, TaskState.DEAD})
# An upstream in one of these has not finished: its dependent cannot have been queued.
_UNSETTLED = frozenset({TaskState.PENDING, TaskState.QUEUED, TaskState.RUNNING,
                        TaskState.RETRYING, TaskState.SCHEDULED})


class Slot(threading.Thread):
    def __init__(self, index: int, worker_id: str, client: redis.Redis, keys: Keys,
                 runner: Runner, inbox: Inbox, acker: Acker, holding: Holding,
                 stopping: threading.Event, ackers: Sequence[Acker] = ()) -> None:
        super().__init__(name=f"slot-{index}", daemon=True)
        self.worker_id = worker_id
        self.client = client
        self.keys = keys
        self.runner = runner
        self.inbox = inbox
        self.acker = acker
        # With several partitions: each one's ack thread, by partition (acker is the
        # first); a lease is acknowledged in its own partition.
        self.ackers = ackers or (acker,)
        self.holding = holding
        self.stopping = stopping
        self.current: str | None = None  # the task id this slot runs, if any
        self.token: str | None = None  # its lease token
        self.abandoned = False  # its task was cancelled: another slot took its place
        self.signer = signing.signer(acker.settings.signing_keys)

    def run(self) -> None:
        while not self.stopping.is_set():
            lease = self.inbox.next()
            if lease is None:
                continue
            finished = self.run_one(lease)
            acker = self._acker(lease)
            if self.abandoned:
                # Its lease is gone: the ack is refused (and logged), and this thread ends.
                acker.submit(finished)
                return
            if not self.inbox.has_ready() and acker.idle():
                # Alone: no batch to wait for, no thread hop, and the same call takes this
                # slot's next lease when one waits in the inbox.
                take = 0 if self.stopping.is_set() else 1
                self.inbox.deliver(acker.store([finished], take), lease.partition)
            else:
                acker.submit(finished)

    def run_one(self, lease: Lease) -> Finished:
        """Run one lease; its outcome, to store.

        An error raised here, outside the task's own code (reading its arguments: a
        RecursionError from an argument nested hundreds deep), counts as a crash: the
        task goes back to its queue and is quarantined once it has done so
        ``poison_threshold`` times, instead of being re-leased for ever. Whatever it is
        (a SystemExit from a user's type decoder): a slot's thread that ended on it would
        leave the task "running" for ever and the worker one slot fewer, without a word."""
        self.current, self.token = lease.task_id, lease.token
        try:
            return self.handle(lease)
        except BaseException as exc:
            log.exception("task=%s: unexpected error in worker=%s", lease.task_id,
                          self.worker_id)
            outcome = Outcome.failure(ErrorInfo(
                "balancer.WorkerError", f"the worker failed to run task {lease.fn}:"
                f" {type(exc).__name__}: {exc}"), crashed=True)
            return Finished(lease, outcome, self._acker(lease).scripts.now_ms(), 0.0, None)
        finally:
            self.current = None  # first: the ack thread must not wait for this slot

    def held_ids(self) -> set[str]:
        """The task ids this slot holds: the one it runs (once run, the ack thread holds it
        through ``Holding`` until its result is stored)."""
        current = self.current
        return set() if current is None else {current}

    def cancel(self, task_id: str, token: str) -> bool:
        """The flow of this lease was cancelled: if this slot runs it, give the slot up
        and stop the task in its thread (``worker.interrupt``; one that does not stop
        runs on, and its result is refused). The worker puts a new slot in its place.
        Whether it ran it."""
        if self.current == task_id and self.token == token and not self.abandoned:
            self.abandoned = True
            self.runner.stop_task(f"its run was cancelled, task={task_id}")
            return True
        return False

    def stop(self) -> None:
        """Nothing to do: the slot stops with the worker's ``stopping`` event."""

    def close(self, kill: bool = False) -> None:
        self.runner.close(kill)

    def handle(self, lease: Lease) -> Finished:
        started_ms = self._acker(lease).scripts.now_ms()
        self.holding.start(lease.task_id, started_ms=started_ms)
        t0 = time.monotonic()
        log.debug("task=%s name=%s started on worker=%s lease=%s", lease.task_id, lease.name,
                  self.worker_id, lease.token)
        refusal = self.signer.refusal(lease) if self.signer is not None else None
        if refusal is not None:  # checked before anything is imported
            outcome = Outcome.failure(ErrorInfo("balancer.BadSignature", refusal),
                                      retryable=False, quarantine=True)
        else:
            try:
                args = self._with_upstream_results(lease)
            except UpstreamUnread as exc:  # not the task's fault: put back, as a crash
                log.warning("task=%s on worker=%s: %s; it goes back to its queue",
                            lease.task_id, self.worker_id, exc)
                outcome = Outcome.failure(ErrorInfo("balancer.UpstreamRecordMissing",
                                                    str(exc)), crashed=True)
            except LookupError as exc:
                outcome = Outcome.failure(ErrorInfo("balancer.UpstreamResultMissing",
                                                    str(exc)))
            else:
                acker = self._acker(lease)
                token = runcontext.enter(runfacts.facts(
                    lease, self.worker_id, self.client, self._keys(lease),
                    functools.partial(self._record_name, lease),
                    LoopStore(acker.scripts, self.signer, self.worker_id, lease,
                              int(acker.settings.timeout_grace * 1000),
                              acker.settings.max_payload_bytes)))
                try:
                    outcome = self._run_or_reuse(lease, args)
                finally:
                    runcontext.leave(token)
        took = time.monotonic() - t0
        self.holding.finish(lease.queue, took * 1000)
        done = None
        if outcome.ok:
            done = Done(lease.task_id, lease.token, lease.queue, lease.flow, started_ms,
                        outcome.payload, lease.timeout is not None, self._children(lease),
                        lease.name, lease.ready_ms)
        return Finished(lease, outcome, started_ms, took, done)

    def _record_name(self, lease: Lease, name: str) -> None:
        """Write the run's name (its task's task_run_name) to its record. Only shown: a
        write that fails is logged, and the run goes on."""
        log.info("task=%s name=%s runs as %r on worker=%s", lease.task_id, lease.name, name,
                 self.worker_id)
        try:
            self._acker(lease).scripts.name_run(self.worker_id, lease.task_id, lease.token,
                                                name)
        except redis.RedisError as exc:
            log.warning("task=%s: its run's name was not recorded (%s)", lease.task_id, exc)

    def _acker(self, lease: Lease) -> Acker:
        """The ack thread of the lease's partition."""
        return self.ackers[lease.partition] if lease.partition else self.acker

    def _keys(self, lease: Lease) -> Keys:
        """The keys of the lease's partition."""
        return self._acker(lease).scripts.keys if lease.partition else self.keys

    def _run_or_reuse(self, lease: Lease, args: bytes) -> Outcome:
        """Run the task, unless its cache options (``cache_for``) find a valid cached
        result: then complete it with that result without running it."""
        keys = self._keys(lease)
        args, prepared = caching.prepare(keys, lease.task_id, lease.fn, args,
                                         self._acker(lease).ttl_ms)
        if prepared is None:
            return self.runner.run(lease.fn, args, lease.timeout)
        try:
            cached = None if prepared.refresh else caching.lookup(
                self.client, self.signer, lease.task_id, prepared,
                self._acker(lease).scripts.now_ms())
            if cached is not None:
                self.client.hset(keys.task(lease.task_id), "cached", 1)
        except redis.RedisError as exc:
            log.warning("task=%s: cache lookup failed (%s); it runs", lease.task_id, exc)
            cached = None
        if cached is not None:
            refused = executor.begin_cached_run(lease.fn, args)
            if refused is not None:
                return refused
            log.info("task=%s name=%s completed from its cache (%s) on worker=%s, not run",
                     lease.task_id, lease.name, prepared.key, self.worker_id)
            statehooks.cached(lease.fn, cached)
            return Outcome(True, cached)
        outcome = self.runner.run(lease.fn, args, lease.timeout)
        if outcome.ok:
            try:
                caching.store(self.client, self.signer, keys, prepared, outcome.payload,
                              keys.task(lease.task_id), self._acker(lease).scripts.now_ms())
            except redis.RedisError as exc:  # the run stands; the next one runs again
                log.warning("task=%s: its result was not cached (%s)", lease.task_id, exc)
        return outcome

    @staticmethod
    def _children(lease: Lease) -> list[Child]:
        try:
            return [Child(str(c[0]), str(c[1]), float(c[2]), bool(len(c) > 3 and c[3]))
                    for c in codec.unpack(lease.children or b"\x90")]
        except (CodecError, ValueError, TypeError, IndexError):
            log.error("task=%s: unreadable list of dependents; they will not be unlocked",
                      lease.task_id)
            return []

    def _with_upstream_results(self, lease: Lease) -> bytes:
        """The argument bytes with every upstream reference replaced by its result."""
        if not codec.may_hold_refs(lease.args):
            return lease.args
        try:
            args, kwargs = codec.decode_call(lease.args, refs_only=True)
        except CodecError:
            return lease.args  # the executor reports the bad payload on the task
        refs = sorted(codec.upstream_refs([args, kwargs]))
        if not refs:
            return lease.args
        keys = self._keys(lease)  # a flow's tasks are all in its partition
        own, upstream = read_upstream(self.client, keys, lease.task_id, refs)
        results = upstream_results(own, upstream)
        return codec.pack(codec.substitute([args, kwargs], results))


def upstream_results(own: bytes | None, upstream: Sequence[tuple[str, list[bytes | None]]]
                     ) -> dict[str, Any]:
    """Each upstream's result (by id) from what ``read_upstream`` read: the task's own
    state, and each upstream's state and result blob. UpstreamUnread when what was read
    cannot be the flow's state; LookupError when an upstream has no result to give."""
    results = {}
    for ref, (state, blob) in upstream:
        shown = state.decode() if state is not None else "expired"
        if shown in _UNSETTLED or (state is None and own is None):
            raise UpstreamUnread(
                f"upstream task {ref} reads {shown} where this worker reads results,"
                f" though its dependent was leased (this worker's connections straddle"
                f" two masters in a Redis failover, or the keys were deleted)")
        if shown in _SETTLED_WITHOUT_RESULT:
            # Only a gated task (a trigger, a map) runs after such an upstream: it gets
            # what the upstream stored (a map's partial list), else None.
            results[ref] = codec.unpack_refs(blob) if blob else None
            continue
        if shown != TaskState.COMPLETED or blob is None:
            raise LookupError(f"the result of upstream task {ref} is not available"
                              f" (state {shown})")
        results[ref] = codec.unpack_refs(blob)
    return results


class UpstreamUnread(LookupError):
    """A leased task's upstream reads as not finished, or its record and the task's own
    are both missing: no state its flow can be in (a dependent is queued once its
    upstreams finished; a finished upstream's record expires on its own, the dependent's
    stays). The worker read from a server that does not hold what its lease came from: a
    master demoted in a manual failover and still answering one of its connections, or
    the reverse, or somebody deleted the keys. The task is put back as after a crash
    (counted toward quarantine), never failed for good on that one read."""


def read_upstream(client: redis.Redis, keys: Keys, task_id: str, refs: Sequence[str]
                  ) -> tuple[bytes | None, list[tuple[str, list[bytes | None]]]]:
    """The task's own state, and each upstream's state and result, read until Redis
    answers.

    The pipeline is built afresh at each try: redis-py empties a pipeline's commands when
    its ``execute`` fails, so running the same one again would return no replies, and a
    task would run as if its upstreams had no results (seen in a Sentinel failover)."""
    def read() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        pipe.hget(keys.task(task_id), "state")
        for ref in refs:
            pipe.hmget(keys.task(ref), ["state", "result"])
        return pipe.execute()
    own, *upstream = persist("read results", task_id, read)
    return own, list(zip(refs, upstream, strict=True))
