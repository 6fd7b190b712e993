"""What a @flow function holds for a task it submitted: a future (``.result()``,
``.wait()``, ``.state``), and the state objects both return, named as Prefect 2/3 names
them. A future only reads the task's record in Redis; the run (balancer/dynamic.py)
writes it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import redis

from balancer.common import codec
from balancer.common.codec import ErrorInfo
from balancer.common.models import TaskState, visible_state
from balancer.common.replies import as_opt_bytes_list
from balancer.options import check_wait
from balancer.run import TaskFailed

if TYPE_CHECKING:
    from balancer.common.keys import Keys

log = logging.getLogger("balancer")

# Our task states as Prefect names them and the type it gives each. A task whose upstream
# failed settles here (Prefect leaves it Pending "NotReady"), so that its run can end.
_PREFECT: dict[str, tuple[str, str]] = {
    TaskState.PENDING: ("Pending", "PENDING"),
    TaskState.QUEUED: ("Pending", "PENDING"),
    TaskState.RUNNING: ("Running", "RUNNING"),
    TaskState.RETRYING: ("AwaitingRetry", "SCHEDULED"),
    TaskState.SCHEDULED: ("Scheduled", "SCHEDULED"),
    TaskState.COMPLETED: ("Completed", "COMPLETED"),
    TaskState.FAILED: ("Failed", "FAILED"),
    TaskState.UPSTREAM_FAILED: ("UpstreamFailed", "FAILED"),
    TaskState.DEAD: ("Crashed", "CRASHED"),
    TaskState.CANCELLED: ("Cancelled", "CANCELLED"),
}
# States a future waits past: a quarantined (dead) task waits for an operator.
FINAL = frozenset({TaskState.COMPLETED, TaskState.FAILED, TaskState.UPSTREAM_FAILED,
                   TaskState.CANCELLED})
# Polling: a future waits by reading its task's state, first often, then every POLL_MAX.
POLL_MIN, POLL_MAX = 0.002, 0.05


@dataclass(frozen=True)
class State:
    """A task's or flow's state, read as Prefect's: ``name`` and ``type`` as it names
    them, ``state`` as ``balancer flow`` shows it, ``message`` the error of a failed one."""

    state: str
    name: str
    type: str
    message: str = ""
    data: Any = None  # the result of a completed run
    error: ErrorInfo | None = None
    label: str = ""  # the task's or flow's name

    @classmethod
    def of(cls, state: str, label: str, data: Any = None,
           error: ErrorInfo | None = None) -> State:
        name, kind = _PREFECT.get(state, (state.capitalize(), state.upper()))
        return cls(state, name, kind, str(error) if error else "", data, error, label)

    def is_completed(self) -> bool:
        return self.type == "COMPLETED"

    def is_failed(self) -> bool:
        return self.type == "FAILED"

    def is_cancelled(self) -> bool:
        return self.type == "CANCELLED"

    def is_crashed(self) -> bool:
        return self.type == "CRASHED"

    def is_pending(self) -> bool:
        return self.type == "PENDING"

    def is_running(self) -> bool:
        return self.type == "RUNNING"

    def is_scheduled(self) -> bool:
        return self.type == "SCHEDULED"

    def is_final(self) -> bool:
        return self.state in FINAL

    def result(self, raise_on_failure: bool = True) -> Any:
        """The value of a completed run. Otherwise raises TaskFailed (with ``.error``), or
        returns it with ``raise_on_failure=False``, as Prefect returns the exception."""
        if self.is_completed():
            return self.data
        failure = TaskFailed(self.label, self.state, self.error)
        if raise_on_failure:
            raise failure
        return failure

    def __repr__(self) -> str:
        return f"{self.name}({self.message!r})" if self.message else f"{self.name}()"


@dataclass(frozen=True)
class RaisedState(State):
    """A failed run's state in the process that caught its exception: ``result()`` raises
    that exception, or returns it with ``raise_on_failure=False``, as Prefect's does."""

    exception: BaseException | None = None

    def result(self, raise_on_failure: bool = True) -> Any:
        if self.exception is None:
            return super().result(raise_on_failure)
        if raise_on_failure:
            raise self.exception
        return self.exception


def read_states(client: redis.Redis, keys: Keys, task_ids: Iterable[str]
                ) -> dict[str, str | None]:
    """Each task's state as users see it, in one round trip (None: no record)."""
    ids = list(task_ids)
    pipe = client.pipeline(transaction=False)
    for task_id in ids:
        pipe.hmget(keys.task(task_id), ["state", "deps"])
    found: dict[str, str | None] = {}
    for task_id, row in zip(ids, pipe.execute()):
        state, deps = as_opt_bytes_list(row)
        found[task_id] = None if state is None else visible_state(state.decode(),
                                                                   int(deps or 0))
    return found


class TaskFuture:
    """A task submitted by a @flow function. Passing it to another task makes that task
    wait for it and receive its result."""

    def __init__(self, client: redis.Redis, keys: Keys, task_id: str, name: str) -> None:
        self.client = client
        self.keys = keys
        self.task_id = task_id
        self.name = name

    @property
    def task_run_id(self) -> str:
        return self.task_id

    @property
    def state(self) -> State:
        """The task's state now."""
        state, deps, blob, error = as_opt_bytes_list(self.client.hmget(
            self.keys.task(self.task_id), ["state", "deps", "result", "error"]))
        if state is None:
            raise KeyError(f"task {self.name!r} ({self.task_id}) has no record (expired"
                           " after result_ttl?)")
        shown = visible_state(state.decode(), int(deps or 0))
        if shown == TaskState.COMPLETED:
            return State.of(shown, self.name, codec.unpack(blob or b"\xc0"))
        return State.of(shown, self.name, error=codec.unpack_error(error))

    def done(self) -> bool:
        return read_states(self.client, self.keys, [self.task_id])[self.task_id] in FINAL

    def wait(self, timeout: float | None = None) -> State | None:
        """Wait for the task to finish and return its final state; None if ``timeout``
        seconds passed first."""
        check_wait(f"task {self.name!r}: wait", timeout)
        if not wait_all([self], timeout):
            return None
        return self.state

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> Any:
        """Wait, then the task's value. A task that did not complete raises TaskFailed
        (``.error`` holds its type, message and traceback), or returns it with
        ``raise_on_failure=False``. TimeoutError past ``timeout`` seconds."""
        state = self.wait(timeout)
        if state is None:
            raise TimeoutError(f"task {self.name!r} ({self.task_id}) not finished after"
                               f" {timeout}s")
        return state.result(raise_on_failure)

    def add_done_callback(self, fn: Callable[[TaskFuture], Any]) -> None:
        """Prefect 3's: call ``fn(future)`` once the task has ended (completed, failed,
        skipped, cancelled): at once, on this thread, if it has; else on the one thread
        of this process that watches such futures (``_DoneCallbacks``). What ``fn``
        raises is logged."""
        if self.done():
            _call_back(fn, self)
        else:
            _callbacks.add(self, fn)

    def __repr__(self) -> str:
        return f"<TaskFuture {self.name} {self.task_id}>"


def _call_back(fn: Callable[[TaskFuture], Any], future: TaskFuture) -> None:
    try:
        fn(future)
    except Exception:
        log.exception("task=%s: a done callback of its future raised", future.task_id)


class _DoneCallbacks:
    """The futures given done callbacks and not ended yet, watched by one thread of the
    process: the states of those of one cluster are read in one round trip per poll
    (often at first, then every POLL_MAX seconds, as ``_finishing`` reads them), and a
    future's callbacks are called, in the order given, once its task has ended. The
    thread ends when none is left to watch (a daemon: callbacks of tasks still running
    when the process exits are not called)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[TaskFuture, list[Callable[[TaskFuture], Any]]]] = {}
        self._added = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, future: TaskFuture, fn: Callable[[TaskFuture], Any]) -> None:
        with self._lock:
            self._pending.setdefault(future.task_id, (future, []))[1].append(fn)
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, daemon=True,
                                                name="balancer-done-callbacks")
                self._thread.start()
        self._added.set()

    def _watch(self) -> None:
        delay = POLL_MIN
        while True:
            with self._lock:
                if not self._pending:
                    self._thread = None
                    return
                watched = list(self._pending.values())
            ended = []
            for future, state in self._states([f for f, _ in watched]):
                if state is not None and state != UNREADABLE and state not in FINAL:
                    continue  # runs on
                with self._lock:
                    entry = self._pending.pop(future.task_id)
                if state in FINAL:
                    ended.append(entry)
                elif state is None:
                    log.error("task=%s: no record (expired after result_ttl?); its done"
                              " callbacks are not called", future.task_id)
            for future, fns in ended:
                for fn in fns:
                    _call_back(fn, future)
            if self._added.wait(delay):
                self._added.clear()
                delay = POLL_MIN
            else:
                delay = min(delay * 2, POLL_MAX)

    @classmethod
    def _states(cls, futures: list[TaskFuture]) -> list[tuple[TaskFuture, str | None]]:
        """Each future's state now, those of one cluster read in one round trip; a
        cluster Redis cannot answer now is read again at the next poll. A record that
        cannot be read (a field a Redis writer spoiled) is its future's alone: said, its
        state UNREADABLE; the thread and the other futures go on."""
        by_cluster: dict[tuple[int, str], list[TaskFuture]] = {}
        for future in futures:
            by_cluster.setdefault((id(future.client), future.keys.prefix), []).append(future)
        found: list[tuple[TaskFuture, str | None]] = []
        for group in by_cluster.values():
            try:
                found += cls._read(group)
            except redis.RedisError as exc:
                log.warning("done callbacks: cannot read task states now: %s", exc)
            except Exception:  # some record is spoiled: each read on its own
                for future in group:
                    try:
                        found += cls._read([future])
                    except redis.RedisError:
                        continue  # again at the next poll
                    except Exception as exc:
                        log.error("task=%s: its record cannot be read (%s); its done"
                                  " callbacks are not called", future.task_id, exc)
                        found.append((future, UNREADABLE))
        return found

    @staticmethod
    def _read(group: list[TaskFuture]) -> list[tuple[TaskFuture, str | None]]:
        states = read_states(group[0].client, group[0].keys, [f.task_id for f in group])
        return [(f, states[f.task_id]) for f in group]


UNREADABLE = "unreadable"  # _DoneCallbacks' state of a future whose record cannot be read


_callbacks = _DoneCallbacks()


class FutureList(list[TaskFuture]):
    """What ``task.map`` returns: the futures, in the order of the items mapped."""

    def wait(self, timeout: float | None = None) -> None:
        wait_all(self, timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True
               ) -> list[Any]:
        """Every task's value, in order (waiting for them all first)."""
        check_wait("map: result", timeout)
        if not wait_all(self, timeout):
            raise TimeoutError(f"mapped tasks not finished after {timeout}s")
        return [f.result(raise_on_failure=raise_on_failure) for f in self]


def wait_all(futures: Iterable[TaskFuture], timeout: float | None = None) -> bool:
    """Wait until every future's task is final (True), or ``timeout`` passed (False)."""
    given = list(futures)  # read twice below: an iterator would be spent by the first
    waiting = {f.task_id for f in given}
    for future in _finishing(given, timeout):
        waiting.discard(future.task_id)
    return not waiting


class DoneAndNotDoneFutures(NamedTuple):
    """What ``wait`` returns, as Prefect's."""

    done: set[TaskFuture]
    not_done: set[TaskFuture]


def wait(futures: Iterable[TaskFuture], timeout: float | None = None
         ) -> DoneAndNotDoneFutures:
    """Prefect's ``prefect.futures.wait``: wait until every task is final, or ``timeout``
    seconds passed, and say which are done."""
    given = list(futures)
    check_wait("wait", timeout)
    finished = {f.task_id for f in _finishing(given, timeout)}
    return DoneAndNotDoneFutures({f for f in given if f.task_id in finished},
                                 {f for f in given if f.task_id not in finished})


def as_completed(futures: Iterable[TaskFuture], timeout: float | None = None
                 ) -> Iterator[TaskFuture]:
    """Prefect's ``prefect.futures.as_completed``: each future as its task ends (failed
    ones too), in the order they end; TimeoutError once ``timeout`` seconds pass first."""
    given = {f.task_id: f for f in futures}
    check_wait("as_completed", timeout)
    for future in _finishing(list(given.values()), timeout):
        del given[future.task_id]
        yield future
    if given:
        raise TimeoutError(f"{len(given)} of the tasks not finished after {timeout}s")


def _finishing(futures: Iterable[TaskFuture], timeout: float | None) -> Iterator[TaskFuture]:
    """Each future once its task is final, in the order they end, until every one is, or
    ``timeout`` passed. Reads the states of those not final yet in one round trip per
    poll, often at first, then every POLL_MAX seconds."""
    waiting = {f.task_id: f for f in futures}
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = POLL_MIN
    while waiting:
        first = next(iter(waiting.values()))
        states = read_states(first.client, first.keys, waiting)
        for task_id, state in states.items():
            if state in FINAL:
                yield waiting.pop(task_id)
            elif state is None:
                raise KeyError(f"task {waiting[task_id].name!r} ({task_id}) has no record"
                               " (expired after result_ttl?)")
        if not waiting or (deadline is not None and time.monotonic() >= deadline):
            return
        time.sleep(delay if deadline is None else max(0.0, min(delay,
                                                                deadline - time.monotonic())))
        delay = min(delay * 2, POLL_MAX)
