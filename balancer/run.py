"""A handle on a submitted flow run: wait for it, read its state and every task's result."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from balancer.common import codec, partitions
from balancer.common.codec import ErrorInfo
from balancer.common.keys import Keys
from balancer.common.models import FlowState, TaskState, visible_state
from balancer.common.replies import as_bytes, as_opt_bytes, as_opt_bytes_list
from balancer.options import check_wait

if TYPE_CHECKING:
    from balancer.cancel import Cancelled
    from balancer.flow import Flow, Node
    from balancer.task import Task


# States whose task has a value to read: a skipped task's is None (a map's, the list of
# its runs' results).
_WITH_RESULT = frozenset({TaskState.COMPLETED, TaskState.SKIPPED})

# Longest single blocking wait: well under redis-py's default socket timeout (5 s).
WAIT_SLICE = 2.0
# While Redis cannot answer (a failover under way), how long to wait between tries.
RETRY_START, RETRY_MAX = 0.1, 1.0


class FlowLost(Exception):
    """The run's record is gone from Redis: a failover lost writes that had not reached a
    replica (``BALANCER_MIN_REPLICAS`` makes submits wait for them), or it expired."""


class TaskFailed(Exception):
    """The task did not complete; ``error`` says why (type, message, traceback)."""

    def __init__(self, task_name: str, state: str, error: ErrorInfo | None) -> None:
        self.task_name = task_name
        self.state = state
        self.error = error
        super().__init__(f"task {task_name!r} {state}: {error}" if error else
                         f"task {task_name!r} {state}")


@dataclass(frozen=True)
class TaskResult:
    """One task's outcome in a run, as Prefect 1's task state reads."""

    state: str
    result: Any = None  # the value, for a completed task
    message: str = ""  # the error, for a failed one
    error: ErrorInfo | None = None
    # A map's: reads its runs' outcomes (``map_states``); None for any other task.
    runs: Callable[[], list[TaskResult]] | None = field(default=None, repr=False,
                                                         compare=False)

    @property
    def map_states(self) -> list[TaskResult]:
        """A mapped task's runs, in the order of its items, as Prefect 1's
        ``state.result[mapped].map_states`` (read when asked: a map may have many); []
        for a task that is not mapped, or not expanded yet."""
        return self.runs() if self.runs is not None else []

    def is_successful(self) -> bool:
        """Completed, or skipped (Prefect 1's Skipped is a Success)."""
        return self.state in _WITH_RESULT

    def is_skipped(self) -> bool:
        return self.state == TaskState.SKIPPED

    def is_failed(self) -> bool:
        return self.state in (TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.DEAD)


class Results:
    """``run.result``: called with a task, its value; indexed by a task, its outcome."""

    def __init__(self, run: FlowRun) -> None:
        self._run = run

    def __call__(self, item: Node | Task | str) -> Any:
        return self._run.value(item)

    def __getitem__(self, item: Node | Task | str) -> TaskResult:
        run = self._run
        task_id = run._task_id(item)
        record = as_opt_bytes_list(run.client.hmget(run.keys.task(task_id),
                                                    [*_RESULT_FIELDS, "mapped"]))
        mapped = int(record[-1] or 0)
        runs = (lambda: self._runs(task_id, mapped)) if mapped else None
        return _result_of(record[:-1], runs)

    def _runs(self, map_id: str, count: int) -> list[TaskResult]:
        """The outcomes of a map's ``count`` runs, in one round trip."""
        from balancer.mapplan import child_ids

        run = self._run
        pipe = run.client.pipeline(transaction=False)
        for child in child_ids(map_id, count):
            pipe.hmget(run.keys.task(child), _RESULT_FIELDS)
        return [_result_of(as_opt_bytes_list(record)) for record in pipe.execute()]


_RESULT_FIELDS = ["state", "result", "error", "deps"]


def _result_of(record: list[bytes | None],
               runs: Callable[[], list[TaskResult]] | None = None) -> TaskResult:
    """A task's outcome from its record's ``_RESULT_FIELDS``."""
    state, blob, error, deps = record
    shown = _state(state, deps)
    info = codec.unpack_error(error) if shown != TaskState.COMPLETED else None
    value = codec.unpack(as_bytes(blob)) if shown in _WITH_RESULT and blob else None
    return TaskResult(shown, value, str(info) if info else "", info, runs)


class FlowRun:
    """A submitted flow run. ``flow.submit()`` returns one; ``FlowRun.attach(id)`` (or
    ``balancer.attach``) makes one for a run submitted elsewhere, from its id alone."""

    def __init__(self, client: redis.Redis, keys: Keys, flow_id: str, flow: Flow | None,
                 ids: dict[Node, str], *, name: str | None = None,
                 tasks: list[tuple[str, str]] | None = None) -> None:
        self.client = client
        self.keys = keys
        self.id = flow_id
        self.flow = flow
        self.ids = ids
        self.name = flow.name if flow is not None else (name or flow_id)
        self._given = tasks  # (task id, name) in the flow's order; None: from ids
        self._labelled: list[tuple[str, str, str]] | None = None

    @property
    def _tasks(self) -> list[tuple[str, str, str]]:
        """(task id, task name, label) in the flow's order: the label tells repeated calls
        apart (name#2, ...). Made when first asked for, not by every submit."""
        if self._labelled is None:
            tasks = self._given
            if tasks is None:  # as submit lists them
                tasks = [(task_id, node.task.name) for node, task_id in self.ids.items()]
            labels = _label_names([n for _, n in tasks])
            self._labelled = [(t, n, label) for (t, n), label in zip(tasks, labels)]
        return self._labelled

    @classmethod
    def attach(cls, flow_id: str, client: redis.Redis | None = None, *,
               redis_url: str | None = None, namespace: str | None = None) -> FlowRun:
        """A handle on the run ``flow_id`` submitted by any process: ``wait``, ``state``,
        ``results``, ``states``, ``why``, ``cancel`` and the rest work as on the handle
        ``submit`` returned; tasks are named by their labels (``name``, ``name#2``...) or
        ids. A @flow function's run has the tasks it added so far (its sub-runs are runs
        of their own). The cluster: ``client``, else ``redis_url``, else
        ``BALANCER_REDIS_URL``. Raises KeyError when no such run is recorded (finished
        runs expire after ``result_ttl``)."""
        from balancer.client import resolve_url, talking
        from balancer.flowview import added_to

        conn, settings = resolve_url(client, redis_url, namespace)
        keys = partitions.flow_keys(Keys(settings.namespace), flow_id)
        with talking(conn):
            name, blob = as_opt_bytes_list(conn.hmget(keys.flow(flow_id), ["name", "tasks"]))
            if name is None:
                raise KeyError(f"no flow run {flow_id} (finished runs expire after"
                               f" {settings.result_ttl:.0f}s)")
            added, _ = added_to(conn, keys, flow_id)
        tasks = [(str(t), str(n)) for t, n in codec.unpack(blob or b"\x90")] + added
        return cls(conn, keys, flow_id, None, {}, name=name.decode(), tasks=tasks)

    @property
    def task_ids(self) -> list[str]:
        """Every task's id, in the flow's order."""
        return [t for t, _, _ in self._tasks]

    def cancel(self) -> Cancelled:
        """Cancel the run: queued tasks never start, running ones are stopped (a process
        pool's child is killed and replaced; a thread pool's task is abandoned and its
        late result refused), and the run and its unfinished tasks end ``cancelled``.
        Idempotent: on a finished run it changes nothing (``.cancelled`` is 0). Needs
        the operators' Redis user under ACLs (``balancer acl``)."""
        from balancer.cancel import cancel_flow
        from balancer.client import settings, talking

        ttl_ms = int(settings(self.keys.namespace).result_ttl * 1000)
        with talking(self.client):
            return cancel_flow(self.client, self.keys, self.id, ttl_ms)

    @property
    def state(self) -> str:
        raw = as_opt_bytes(self.client.hget(self.keys.flow(self.id), "state"))
        return raw.decode() if raw is not None else "unknown"

    def is_finished(self) -> bool:
        return self.state in FlowState.FINISHED

    def is_cancelled(self) -> bool:
        return self.state == FlowState.CANCELLED

    def is_successful(self) -> bool:
        return self.state == FlowState.COMPLETED

    def is_failed(self) -> bool:
        return self.state == FlowState.FAILED

    @property
    def message(self) -> str:
        """In words, as Prefect 1's flow state says it."""
        state = self.state
        if state == FlowState.COMPLETED:
            failed = as_opt_bytes(self.client.hget(self.keys.flow(self.id), "failed"))
            if failed and int(failed) > 0:  # judged by its reference tasks (Prefect 1's)
                return "All reference tasks succeeded."
            return "All tasks succeeded."
        if state == FlowState.FAILED:
            broken = as_opt_bytes(self.client.hget(self.keys.flow(self.id), "broken"))
            if broken is not None:  # settled by the scripts (_prelude.lua: flow_tasks_done)
                return (f"Its record's {broken.decode(errors='replace')!r} count was no"
                        " number (written by something other than the cluster): the run"
                        " was ended as failed.")
            found = self.first_failure()
            return "Some tasks failed." + (f" First: {found[0]}: {found[1]}" if found else "")
        return f"The run is {state}."

    @property
    def result(self) -> Results:
        """``run.result(task)``: the task's value (TaskFailed if it did not complete).
        ``run.result[task]``: its outcome as Prefect 1's ``state.result[task]`` gives it,
        with ``.result``, ``.message``, ``.is_successful()`` and ``.is_failed()``."""
        return Results(self)

    def wait(self, timeout: float | None = None, *,
             on_tick: Callable[[], None] | None = None, tick: float = WAIT_SLICE) -> str:
        """Block until the run finishes; returns its final state.

        Raises TimeoutError after ``timeout`` seconds (None: wait for ever). ``on_tick``
        is called every ``tick`` seconds while the run goes on (progress reports).
        """
        from balancer.client import talking

        check_wait(f"flow {self.name!r}: wait", timeout)
        with talking(self.client):
            return self._wait(timeout, on_tick, tick)

    def _wait(self, timeout: float | None, on_tick: Callable[[], None] | None,
              tick: float) -> str:
        deadline = None if timeout is None else time.monotonic() + timeout
        slice_s = min(tick, WAIT_SLICE)
        retry = RETRY_START
        while True:
            left = slice_s if deadline is None else deadline - time.monotonic()
            try:
                item, state = self._wait_slice(max(0.01, min(left, slice_s)))
            except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError) as exc:
                # Redis cannot answer for now (a failover under way): try again until the
                # deadline; the run goes on without us.
                if deadline is not None and time.monotonic() + retry >= deadline:
                    raise TimeoutError(f"flow {self.name!r} ({self.id}): Redis did not"
                                       f" answer ({exc}) until the wait's end, {timeout}s"
                                       ) from exc
                time.sleep(retry)
                retry = min(retry * 2, RETRY_MAX)
                continue
            retry = RETRY_START
            if item is not None:
                return item.decode()
            if on_tick is not None:
                on_tick()
            if state in FlowState.FINISHED:
                return state
            if state == "unknown":
                raise FlowLost(f"flow {self.name!r} ({self.id}) has no record in Redis:"
                               " Redis lost its data (restarted without persistence, or"
                               " flushed), a failover lost writes that no replica had yet"
                               " (set BALANCER_MIN_REPLICAS to make submits wait for one),"
                               " or it expired after result_ttl")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"flow {self.name!r} ({self.id}) still {state}"
                                   f" after {timeout}s")

    def _wait_slice(self, seconds: float) -> tuple[bytes | None, str]:
        """Wait up to ``seconds`` for the final state; (it, or None, and the state now)."""
        done_key = self.keys.flow_done(self.id)
        # The last task pushes the final state here. Moving the list onto itself waits
        # for it and leaves it there for other waiters, in one command.
        # redis-py annotates the timeout as int; BLMOVE takes seconds as a double, and
        # redis-py sends the float as given.
        item = as_opt_bytes(self.client.blmove(
            done_key, done_key, seconds, "LEFT", "RIGHT"))  # type: ignore[arg-type]
        return item, (FlowState.COMPLETED if item is not None else self.state)

    def _task_id(self, item: Node | Task | str) -> str:
        from balancer.flow import Node

        if isinstance(item, str):  # a label (name, name#2...) or a task id
            for task_id, _, label in self._tasks:
                if item in (label, task_id):
                    return task_id
            raise KeyError(f"no task {item!r} in this run")
        if not self.ids:  # attached by id: a task is known by its name
            name = item.task.name if isinstance(item, Node) else item.name
            found = [t for t, n, _ in self._tasks if n == name]
            if len(found) == 1:
                return found[0]
            raise KeyError(f"task {name!r} is in this run {len(found)} times: name it by"
                           " its label (name#2...) or id" if found else
                           f"no task {name!r} in this run")
        node = item if isinstance(item, Node) else self.flow_node(item)
        try:
            return self.ids[node]
        except KeyError:
            raise KeyError(f"{item!r} is not part of this run") from None

    def flow_node(self, item: Task) -> Node:
        if self.flow is None:
            raise KeyError(f"{item!r} is not part of this run")
        return self.flow.node_of(item)

    def task_state(self, item: Node | Task | str) -> str:
        """pending (upstream not done), queued (in its queue, or leased to a worker and not
        yet marked running: a task is marked running once it has run for 20 ms), running,
        retrying, completed, failed, upstream_failed, or dead (quarantined)."""
        state, deps = as_opt_bytes_list(
            self.client.hmget(self.keys.task(self._task_id(item)), ["state", "deps"]))
        return _state(state, deps)

    def error(self, item: Node | Task | str) -> ErrorInfo | None:
        return codec.unpack_error(as_opt_bytes(
            self.client.hget(self.keys.task(self._task_id(item)), "error")))

    def value(self, item: Node | Task | str) -> Any:
        """The task's return value; raises TaskFailed if it did not complete."""
        task_id = self._task_id(item)
        state, blob, error, name = as_opt_bytes_list(self.client.hmget(
            self.keys.task(task_id), ["state", "result", "error", "name"]))
        if state is None:
            raise KeyError(f"task {task_id} has no record (expired after result_ttl?)")
        if state.decode() not in _WITH_RESULT:
            raise TaskFailed(as_bytes(name).decode(), state.decode(), codec.unpack_error(error))
        return codec.unpack(blob) if blob else None  # skipped: None, or a map's list

    def _read(self, *names: str) -> list[tuple[str, str, list[bytes | None]]]:
        """(task name, label, fields) of every task of the run, in one round trip."""
        pipe = self.client.pipeline(transaction=False)
        for task_id, _, _ in self._tasks:
            pipe.hmget(self.keys.task(task_id), list(names))
        return [(name, label, as_opt_bytes_list(row))
                for (_, name, label), row in zip(self._tasks, pipe.execute())]

    def results(self) -> dict[str, Any]:
        """Results of completed tasks by label: the task's name, and ``name#n`` for its
        n-th call when it is called several times (as ``why`` and ``states`` name them)."""
        return {label: codec.unpack(as_bytes(blob))
                for _, label, (state, blob) in self._read("state", "result")
                if state is not None and state.decode() == TaskState.COMPLETED}

    def why(self) -> dict[str, str]:
        """For each task not finished: what holds it (upstream not done, queue paused, no
        worker serves its queue, concurrency limit, a tag at its limit, workers full, retry
        delay, ...).
        Keys are task names, or ``name#n`` for a task called several times."""
        from balancer import why

        facts = why.task_facts(self.client, self.keys, self.task_ids)
        cluster = why.ClusterFacts.gather(self.client, self.keys)
        out: dict[str, str] = {}
        for task_id, _, label in self._tasks:
            f = facts.get(task_id)
            text = why.reason(f, cluster) if f is not None else "record expired"
            if text:
                out[label] = text
        return out

    def first_failure(self) -> tuple[str, ErrorInfo | None] | None:
        """The first task, in the flow's order, that failed or was quarantined (not one
        that only had an upstream fail), with its error; None when none did."""
        for name, _, (state, error) in self._read("state", "error"):
            if state is not None and state.decode() in (TaskState.FAILED, TaskState.DEAD):
                return name, codec.unpack_error(error)
        return None

    def states(self) -> dict[str, str]:
        """Every task's state by label (``name``, or ``name#n`` for repeated calls)."""
        return {label: _state(state, deps)
                for _, label, (state, deps) in self._read("state", "deps")}

    def __repr__(self) -> str:
        return f"<FlowRun {self.name!r} {self.id} {self.state}>"


def _label_names(names: list[str]) -> list[str]:
    """A task's name, and ``name#n`` for its n-th call (as ``flow._labels`` names them)."""
    counts: dict[str, int] = {}
    out = []
    for name in names:
        n = counts[name] = counts.get(name, 0) + 1
        out.append(name if n == 1 else f"{name}#{n}")
    return out


def _state(state: bytes | None, deps: bytes | None) -> str:
    return "unknown" if state is None else visible_state(state.decode(), int(deps or 0))
