"""An open flow run: the run of a @flow function (Prefect 2/3's dynamic style).

The function runs in the client and submits tasks as it goes; each is added to its run
in Redis in one script call (``flow_extend.lua``: records, counts, listing, the ready
ones queued) and goes through the dispatcher like any other. The run holds one count in
``remaining`` while its function runs, so that it is never reported finished before the
function returns (``flow_close.lua`` gives it back, after the function's tasks settled).

A task waiting for others (a future passed as an argument, or in ``wait_for``) is written
``pending``; the run's watcher thread reads the states of what it waits for and releases
it (``flow_release.lua``): queued when they completed, ``upstream_failed`` when one failed.
The client thus decides when such a task is ready, by polling (a few ms at first, then
every 50 ms): a task already leased cannot learn of dependents added after its lease.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis
from redis.typing import EncodableT, FieldT

from balancer import building, parameter, tagging
from balancer.annotations import ENDED, allow_failure, quote
from balancer.common import clusterfacts, codec, partitions, signals, signing
from balancer.common.codec import CodecError, ErrorInfo, TooDeep, UpstreamRef
from balancer.common.keys import Keys
from balancer.common.models import FlowState, TaskState, new_id
from balancer.common.scripts import (
    EXTEND_CANCELLED,
    AddedTask,
    NotReplicated,
    Scripts,
    durability,
)
from balancer.common.settings import Settings
from balancer.flow import FlowCancelled, FlowError
from balancer.futures import POLL_MAX, POLL_MIN, FutureList, TaskFuture, read_states, wait_all
from balancer.options import EXACT_SCORE_LIMIT, delay_field
from balancer.scheduling import task_score
from balancer.submit import RECENT_FLOWS, call_keywords, redis_now_ms

if TYPE_CHECKING:
    from balancer.task import Task

log = logging.getLogger("balancer.client")

WATCH_LINGER = 1.0  # seconds a run's watcher thread waits for more waiting tasks
FLOW_KIND = "flow"  # a listing entry of a sub-run, in its parent's list of tasks
TASK_KIND = "task"


@dataclass
class _Waiting:
    """A task written pending, until the watcher releases it."""

    future: TaskFuture
    queue: str
    score: float
    upstream: list[TaskFuture]
    allowed: frozenset[str] = frozenset()  # upstream ids under allow_failure


_scripts_lock = threading.Lock()
_scripts_of: weakref.WeakKeyDictionary[redis.Redis, dict[str, Scripts]] = (
    weakref.WeakKeyDictionary())


def _scripts(client: redis.Redis, settings: Settings, keys: Keys) -> Scripts:
    """One Scripts per client and partition: its per-thread connections outlive a run.
    Durable as ``settings`` ask (BALANCER_MIN_REPLICAS): tasks added wait for replicas."""
    wanted = durability(settings)
    with _scripts_lock:
        known = _scripts_of.setdefault(client, {})
        found = known.get(keys.prefix)
        if found is None or found.durability != wanted:
            found = known[keys.prefix] = Scripts.for_settings(client, keys, settings)
        return found


def current_run() -> DynamicRun | None:
    """The open run of the @flow function running on this thread, if any."""
    run = building.current_run()
    return run if isinstance(run, DynamicRun) else None


def new_run_id(client: redis.Redis, keys: Keys) -> str:
    """A new flow run's id, placed in a partition as a submitted flow's is
    (common/partitions.py)."""
    base = new_id()
    return partitions.flow_id_in(base, partitions.place(base, clusterfacts.count_to_write(
        client, keys)))


class DynamicRun:
    def __init__(self, client: redis.Redis, settings: Settings, name: str,
                 parent: DynamicRun | None = None, *, asynchronous: bool = False,
                 run_id: str | None = None) -> None:
        self.client = client
        # An async def function's run: calling an async def task in it gives a coroutine
        # (flowfn.call), as in Prefect.
        self.asynchronous = asynchronous
        self.settings = settings
        # Placed in a partition as a submitted flow is (common/partitions.py); a sub-run in
        # its parent's, whose list of tasks it joins in the same transaction.
        keys = Keys(settings.namespace)
        if run_id is not None:  # chosen by whoever asked for the run (balancer/deployments.py)
            self.id = run_id
            self.keys = partitions.flow_keys(keys, run_id)
        elif parent is not None:
            self.id = partitions.flow_id_in(new_id(), parent.keys.partition)
            self.keys = parent.keys
        else:
            self.id = new_run_id(client, keys)
            self.keys = partitions.flow_keys(keys, self.id)
        self.scripts = _scripts(client, settings, self.keys)
        self.name = name
        # Its own name (flowfn: flow_run_name), and the function's arguments by parameter.
        self.run_name: str | None = None
        self.deployment: str | None = None  # the deployment it runs for (balancer/serving.py)
        self.parameters: dict[str, Any] = {}
        self.parent = parent
        self.futures: list[TaskFuture] = []
        self._waiting: dict[str, _Waiting] = {}
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._signer = signing.signer(settings.signing_keys)
        self._ttl_ms = int(settings.result_ttl * 1000)

    # -- the run -------------------------------------------------------------------

    def open(self) -> DynamicRun:
        """Write the run, open and empty, listed among recent runs (and in its parent's
        list, for a sub-run), in one transaction."""
        now_ms = redis_now_ms(self.client, self.keys, self.settings)
        record: dict[FieldT, EncodableT] = {
            "id": self.id, "name": self.name, "state": FlowState.RUNNING, "total": 0,
            "remaining": 1, "failed": 0, "created": now_ms, "tasks": codec.pack([]),
            "open": 1}
        if self.parent is not None:
            record["parent"] = self.parent.id
        if self.run_name is not None:
            record["run_name"] = self.run_name
        if self.deployment is not None:
            record["deployment"] = self.deployment
        # For its tasks (balancer.context.parameters, caches keyed on them).
        record.update(parameter.record_fields(self.parameters))
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.flow(self.id), mapping=record)
        pipe.zadd(self.keys.flows, {self.id: now_ms})
        pipe.zremrangebyrank(self.keys.flows, 0, -RECENT_FLOWS - 1)
        if self.parent is not None:
            pipe.rpush(self.keys.flow_tasks(self.parent.id),
                       codec.pack([self.id, self.name, FLOW_KIND]))
        pipe.execute()
        try:
            self.scripts.confirm(self.keys.flow(self.id), "replicas",
                                 str(self.settings.min_replicas), f"flow {self.id}")
        except NotReplicated as exc:
            # The function will not run: the run must not stay open for ever.
            self.scripts.flow_close(self.id, FlowState.FAILED, self._ttl_ms, codec.pack_error(
                ErrorInfo("NotReplicated", str(exc), "")))
            raise
        log.info("opened flow=%s name=%s%s%s", self.id, self.name,
                 f" run_name={self.run_name!r}" if self.run_name is not None else "",
                 f" (sub-run of flow={self.parent.id})" if self.parent else "")
        return self

    def close(self, failed: bool, error: ErrorInfo | None = None) -> str:
        """The function returned (or raised, ``failed``): close the run. The caller waited
        for its tasks, so it settles now in the function's outcome; if it could not (it
        was interrupted), the tasks still waiting are failed, and the run settles when
        the last task running does."""
        self._stop_watching(error)
        state = FlowState.FAILED if failed else FlowState.COMPLETED
        done = self.scripts.flow_close(self.id, state, self._ttl_ms,
                                       codec.pack_error(error) if error else b"")
        if done == 0 and self.client.hget(self.keys.flow(self.id), "state") == b"cancelled":
            log.info("closed flow=%s name=%s: it was cancelled", self.id, self.name)
            return FlowState.CANCELLED
        log.info("closed flow=%s name=%s %s%s", self.id, self.name, state,
                 "" if done == 1 else " (it settles when its last task does)")
        return state

    def wait_for_tasks(self) -> None:
        """Wait until every task submitted is final (released ones included)."""
        while True:
            with self._lock:
                futures = list(self.futures)
            wait_all(futures)
            with self._lock:
                if len(self.futures) == len(futures):
                    # Every task is final, those the watcher waited to release too (a
                    # cancel settles them): none is left to release.
                    self._waiting.clear()
                    return

    # -- adding tasks --------------------------------------------------------------

    def submit(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
               wait_for: Iterable[Any] | None = None) -> TaskFuture:
        return self.submit_many(task, [(args, kwargs)], wait_for)[0]

    def submit_many(self, task: Task, calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
                    wait_for: Iterable[Any] | None = None) -> FutureList:
        """Add one task per call, in one script call: those whose upstream futures all
        completed are queued at once, the others wait for the watcher."""
        try:
            task.check()
            path = task.path
        except ValueError as exc:
            raise FlowError(str(exc)) from None
        for args, kwargs in calls[:1]:  # a map's calls all have the first one's shape
            task.check_call(args, kwargs)
        after, allowed_after = upstream_in(task.name, wait_for or (), "wait_for")
        now_ms = redis_now_ms(self.client, self.keys, self.settings)
        score = task_score(now_ms, task.priority, self.settings.aging_seconds * 1000)
        if not abs(score) < EXACT_SCORE_LIMIT:
            raise FlowError(f"task {task.name!r}: priority {task.priority} gives a queue score"
                            f" past what Redis orders exactly (2**53)")
        prepared = []
        for args, kwargs in calls:
            found, allowed = _upstream_in_call(task.name, args, kwargs)
            upstream = [*found, *after]
            kwargs = {**kwargs, **call_keywords(task)}
            blob = _encode(task.name, args, kwargs, self.settings.max_payload_bytes)
            prepared.append((new_id(), blob, list({id(f): f for f in upstream}.values()),
                             allowed | allowed_after))
        states = read_states(self.client, self.keys,
                             {f.task_id for _, _, ups, _ in prepared for f in ups})
        added: list[AddedTask] = []
        futures = FutureList()
        waiting: list[_Waiting] = []
        ready: dict[str, list[str]] = {}
        for task_id, blob, upstream, allowed in prepared:
            unmet = [f for f in upstream if not _met(states.get(f.task_id), f, allowed)]
            future = TaskFuture(self.client, self.keys, task_id, task.name)
            record = self._record(task, path, task_id, blob, score, len(unmet))
            added.append(AddedTask(task_id, task.queue_name, None if unmet else score,
                                   codec.pack([task_id, task.name, TASK_KIND]), record))
            futures.append(future)
            if unmet:
                waiting.append(_Waiting(future, task.queue_name, score, unmet, allowed))
            else:
                ready.setdefault(task.queue_name, []).append(task_id)
        outcome = self.scripts.flow_extend(self.id, added, signals.submitted(ready))
        if outcome == EXTEND_CANCELLED:
            raise FlowCancelled(f"flow {self.name!r} ({self.id}) was cancelled: no task can"
                                f" be added to it (task {task.name!r} not submitted)")
        if outcome < 0:
            raise FlowError(f"flow {self.name!r} ({self.id}) is closed: its function has"
                            " returned, so no task can be added to it")
        with self._lock:
            self.futures.extend(futures)
            for w in waiting:
                self._waiting[w.future.task_id] = w
            if waiting and self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, daemon=True,
                                                 name=f"flow-{self.id}-watch")
                self._watcher.start()
        return futures

    def _record(self, task: Task, path: str, task_id: str, blob: bytes, score: float,
                unmet: int) -> dict[str, Any]:
        """The task hash, as a submit writes it (balancer/submit.py: _task_record)."""
        record: dict[str, Any] = {
            "name": task.name, "fn": path, "flow": self.id, "queue": task.queue_name,
            "score": score, "args": blob,
            "state": TaskState.PENDING if unmet else TaskState.QUEUED,
        }
        delay = delay_field(task.retry_delay, task.retries, task.retry_jitter_factor)
        optional = {"priority": task.priority, "retries": task.retries, "retry_delay": delay,
                    "timeout": task.timeout, "deps": unmet,
                    "tags": ",".join(tagging.merged(task.name, task.tags, tagging.current()))}
        record.update({k: v for k, v in optional.items() if v})
        if self._signer is not None:
            record["sig"] = self._signer.sign(signing.spec_message(
                task_id, self.id, task.queue_name, task.timeout, path, task.name, b"", blob))
        return record

    # -- releasing waiting tasks ---------------------------------------------------

    def _watch(self) -> None:
        """Release each waiting task once what it waits for is final, until none has
        waited for WATCH_LINGER seconds (a thread, and its connection, per burst saved)."""
        delay = POLL_MIN
        idle_since: float | None = None
        while True:
            with self._lock:
                waiting = list(self._waiting.values())
                if not waiting:
                    now = time.monotonic()
                    idle_since = idle_since or now
                    if now - idle_since >= WATCH_LINGER:
                        self._watcher = None
                        return
            if not waiting:
                time.sleep(POLL_MAX)
                continue
            idle_since = None
            try:
                released = self._release_due(waiting)
            except redis.RedisError as exc:
                log.warning("flow=%s: reading its waiting tasks failed (%s); trying again",
                            self.id, exc)
                released = 0
            delay = POLL_MIN if released else min(delay * 2, POLL_MAX)
            time.sleep(delay)

    def _release_due(self, waiting: list[_Waiting]) -> int:
        """Release the waiting tasks whose upstreams are final; forget those no longer
        pending (their run was cancelled): nothing is released for them."""
        states = read_states(self.client, self.keys,
                             {f.task_id for w in waiting for f in (w.future, *w.upstream)})
        released = 0
        for w in waiting:
            if states.get(w.future.task_id) != TaskState.PENDING:
                log.info("flow=%s task=%s is %s: no longer waits to be released", self.id,
                         w.future.task_id, states.get(w.future.task_id) or "gone")
                with self._lock:
                    self._waiting.pop(w.future.task_id, None)
                released += 1
                continue
            failed = [f for f in w.upstream
                      if f.task_id not in w.allowed
                      and states.get(f.task_id) in (None, TaskState.FAILED,
                                                    TaskState.UPSTREAM_FAILED)]
            error = b""
            if failed:
                up = failed[0]
                error = codec.pack_error(ErrorInfo(
                    "balancer.UpstreamFailed",
                    f"upstream task {up.name!r} ({up.task_id})"
                    f" {states.get(up.task_id) or 'has no record'}"))
            elif not all(_met(states.get(f.task_id), f, w.allowed) for f in w.upstream):
                continue
            future = w.future
            self.scripts.flow_release(future.task_id, w.queue, w.score, self.id,
                                      self._ttl_ms, error,
                                      signals.submitted({w.queue: [future.task_id]}))
            with self._lock:
                self._waiting.pop(future.task_id, None)
            released += 1
        return released

    def _stop_watching(self, error: ErrorInfo | None) -> None:
        with self._lock:
            left = list(self._waiting.values())
            self._waiting.clear()
        why = codec.pack_error(ErrorInfo(
            "balancer.FlowEnded", f"flow {self.name!r} ended before this task's upstream"
            f" tasks finished ({error or 'interrupted'})"))
        for w in left:
            self.scripts.flow_release(w.future.task_id, w.queue, w.score, self.id,
                                      self._ttl_ms, why, "")


def futures_in(task_name: str, values: Iterable[Any], where: str) -> list[TaskFuture]:
    found = []
    for value in values:
        if not isinstance(value, TaskFuture):
            raise TypeError(f"task {task_name!r}: {where} takes futures (of .submit() or"
                            f" .map()), got {type(value).__name__}")
        found.append(value)
    return found


def upstream_in(task_name: str, values: Iterable[Any], where: str
                ) -> tuple[list[TaskFuture], frozenset[str]]:
    """The futures of ``wait_for``, some under allow_failure: all of them, and the ids of
    those allowed to fail."""
    given = list(values)
    allowed = [v.value for v in given if isinstance(v, allow_failure)]
    plain = futures_in(task_name, [v for v in given if not isinstance(v, allow_failure)],
                       where)
    allowed_futures = futures_in(task_name, allowed, f"allow_failure(...) in {where}")
    return [*plain, *allowed_futures], _allowed_ids(allowed_futures, plain)


def _upstream_in_call(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
                      ) -> tuple[list[TaskFuture], frozenset[str]]:
    """The futures among a call's arguments, and the ids of those under allow_failure
    (a future also passed bare is not: its failure fails the task)."""
    try:
        found = codec.find_in_call(task_name, args, kwargs, (TaskFuture, allow_failure))
        plain = [f for f in found if isinstance(f, TaskFuture)]
        allowed = [f for wrapper in found if isinstance(wrapper, allow_failure)
                   for f in codec.find_in_call(task_name, (wrapper.value,), {}, TaskFuture)]
    except TooDeep as exc:
        raise FlowError(str(exc)) from None
    return [*plain, *allowed], _allowed_ids(allowed, plain)


def _allowed_ids(allowed: list[TaskFuture], plain: list[TaskFuture]) -> frozenset[str]:
    return frozenset(f.task_id for f in allowed) - {f.task_id for f in plain}


def _met(state: str | None, future: TaskFuture, allowed: frozenset[str]) -> bool:
    """Whether an upstream in ``state`` lets its dependent run: completed, or ended at
    all when it is allowed to fail."""
    return state == TaskState.COMPLETED or (future.task_id in allowed and state in ENDED)


def _as_refs(value: Any) -> Any:
    """``value`` with each future replaced by a reference to its task's result (the
    depth was checked by ``find_in_call``)."""
    if isinstance(value, TaskFuture):
        return UpstreamRef(value.task_id)
    if isinstance(value, allow_failure):
        return _as_refs(value.value)
    if isinstance(value, quote):
        return value.value
    if isinstance(value, tuple) and hasattr(value, "_asdict"):  # a NamedTuple
        if codec.is_registered(type(value)):
            return value
        return {k: _as_refs(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_as_refs(v) for v in value]
    if isinstance(value, dict):
        return {k: _as_refs(v) for k, v in value.items()}
    return value


def _encode(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limit: int) -> bytes:
    try:
        return codec.encode_call(task_name, tuple(_as_refs(a) for a in args),
                                 {k: _as_refs(v) for k, v in kwargs.items()}, limit)
    except CodecError as exc:
        raise FlowError(str(exc)) from None
