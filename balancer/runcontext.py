"""What a running task may know of its run: ``balancer.context``, as Prefect 1's
``prefect.context`` (in a task, ``balancer.get_run_logger()`` is its ``logger``).

A task reads ``context.task_run_id`` for an idempotency key, ``context.task_run_count`` to
tell a retry, ``context.date`` for the day a scheduled run stands for, and logs through
``context.logger``, whose lines carry its task and flow ids as the worker's own do.

The worker binds a run's facts around each task (``enter``, ``leave``): what the lease
carries costs nothing more; what only the records hold (the flow's name, how many times
the task ran, the due time of a scheduled run) is read from Redis in one round trip the
first time the task asks for one of them, never otherwise. The facts live in a context
variable, so each slot's thread, and each async task, sees its own run. Outside a run
every fact is None and ``context.logger`` is a plain logger: a task called as a function
still runs.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

LOGGER = "balancer.task"

# What only the records hold: read from Redis when first asked for (worker/runfacts.py).
_READ = ("task_run_count", "task_tags", "flow_name", "flow_run_name", "deployment",
         "scheduled_start_time", "date", "today", "yesterday", "tomorrow")
_FROM_LEASE = ("task_run_id", "task_name", "task_full_name", "task_run_name", "map_index",
               "flow_run_id", "queue", "worker")
# The flow run's parameters: read from Redis on their own, the first time asked for.
KEYS = (*_FROM_LEASE, *_READ, "parameters", "task_loop_count", "logger")
# A looping run's last result (Prefect 1's LOOP): a key only once the run looped.
LOOP_RESULT = "task_loop_result"
NO_LOOP_RESULT = object()


class TaskLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """``balancer.task`` with the run's ids in front of each line (``task=… flow=…``), as
    the worker's own lines carry them (and JSON logs make fields of them)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]
                ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        return (f"task={extra['task']} flow={extra['flow']} name={extra['name']}: {msg}",
                kwargs)


@dataclass(slots=True)
class RunFacts:
    """One task run's facts; ``read`` fetches the rest (a dict of ``_READ``'s keys) once."""

    task_run_id: str
    task_name: str
    flow_run_id: str
    queue: str
    worker: str
    read: Callable[[], dict[str, Any]] | None = None
    # The run's own name (its task's task_run_name, balancer/runnames.py), once made, and
    # where the worker records it (``named``).
    run_name: str | None = None
    record_name: Callable[[str], None] | None = None
    # The call (function, arguments, keyword arguments) as the task receives it, for
    # runtime.task_run.parameters.
    call: tuple[Callable[..., Any], Any, Any] | None = None
    # The worker's cluster, for what a task does there itself (balancer/concurrency.py).
    client: Any = None
    namespace: str | None = None
    # The flow run's parameters, read once when first asked for (worker/runfacts.py),
    # and whether its record keeps them all.
    read_parameters: Callable[[], tuple[dict[str, Any], bool]] | None = None
    # Where a looping run keeps its progress (worker/looping.py: LoopStore).
    loop_store: Any = None
    _loop: tuple[int, Any] | None = field(default=None, repr=False)
    _more: dict[str, Any] | None = field(default=None, repr=False)
    _parameters: tuple[dict[str, Any], bool] | None = field(default=None, repr=False)

    @property
    def map_index(self) -> int | None:
        """The item's index for a map's child (its id is ``<map id>-<index>``), else None."""
        head, dash, tail = self.task_run_id.rpartition("-")
        return int(tail) if dash and head and tail.isdigit() else None

    @property
    def task_full_name(self) -> str:
        index = self.map_index
        return self.task_name if index is None else f"{self.task_name}[{index}]"

    @property
    def task_run_name(self) -> str:
        """The run's name: as its task's ``task_run_name`` made it, else ``task_full_name``."""
        return self.run_name if self.run_name is not None else self.task_full_name

    def named(self, name: str) -> None:
        """The run's name is ``name``: from now on in its logger's lines and the context,
        and in its task's record."""
        self.run_name = name
        if self.record_name is not None:
            self.record_name(name)

    @property
    def task_parameters(self) -> dict[str, Any]:
        """The task run's arguments by parameter name (Prefect's ``task_run.parameters``;
        the context's ``parameters`` are its flow run's)."""
        from balancer import runnames

        return {} if self.call is None else runnames.parameters(*self.call)

    @property
    def logger(self) -> logging.LoggerAdapter:  # type: ignore[type-arg]
        return TaskLogger(logging.getLogger(LOGGER), {
            "task": self.task_run_id, "flow": self.flow_run_id,
            "name": self.run_name if self.run_name is not None else self.task_name})

    def flow_parameters(self) -> dict[str, Any]:
        """The flow run's parameters, read once (``more``'s rule)."""
        return self.recorded_parameters()[0]

    def recorded_parameters(self) -> tuple[dict[str, Any], bool]:
        """The flow run's parameters, and whether its record keeps them all (some may not
        pack, or all be too big to copy in: balancer/parameter.py)."""
        if self._parameters is None:
            self._parameters = self.read_parameters() if self.read_parameters else ({}, True)
        return self._parameters

    def loop_state(self) -> tuple[int, Any]:
        """(the loop's iteration, from 1; its last result, else NO_LOOP_RESULT): as this
        run left it, else as an earlier run of the task recorded it (read with ``more``:
        a retry goes on from the last iteration)."""
        if self._loop is None:
            stored = None
            if self.loop_store is not None:
                stored = self.loop_store.load(self.more().get("loop"))
            self._loop = stored if stored is not None else (1, NO_LOOP_RESULT)
        return self._loop

    def looped(self, result: Any) -> int:
        """The run raised LOOP with ``result``: the next iteration's number, recorded."""
        count = self.loop_state()[0] + 1
        self._loop = (count, result)
        if self.loop_store is not None:
            self.loop_store.save(count, result)
        return count

    def more(self) -> dict[str, Any]:
        """The records' facts, read once (two threads of one task asking at once may both
        read: the same answer, no harm, and no lock to make per task)."""
        if self._more is None:
            self._more = self.read() if self.read is not None else {}
        return self._more


_facts: contextvars.ContextVar[RunFacts | None] = contextvars.ContextVar(
    "balancer_task_run", default=None)


def enter(facts: RunFacts) -> contextvars.Token[RunFacts | None]:
    """``facts`` are the current task run's, until ``leave`` (the worker, around a task)."""
    return _facts.set(facts)


def leave(token: contextvars.Token[RunFacts | None]) -> None:
    _facts.reset(token)


def current() -> RunFacts | None:
    """The current task run's facts (None outside a run)."""
    return _facts.get()


@contextlib.contextmanager
def bound(facts: RunFacts) -> Iterator[None]:
    """The body runs with ``facts`` as the current task run's."""
    token = enter(facts)
    try:
        yield
    finally:
        leave(token)


def dated(scheduled: datetime) -> dict[str, Any]:
    """Prefect 1's date keys for a run standing for ``scheduled`` (UTC)."""
    day = scheduled.date()
    return {"scheduled_start_time": scheduled, "date": scheduled,
            "today": day.isoformat(), "yesterday": (day - timedelta(days=1)).isoformat(),
            "tomorrow": (day + timedelta(days=1)).isoformat()}


class Context(Mapping[str, Any]):
    """``balancer.context``: the current task run's facts, by attribute
    (``context.task_run_id``), by key (``context["flow_name"]``) or with
    ``context.get("logger")``, as Prefect 1's. Keys: ``task_run_id``, ``task_name``,
    ``task_full_name`` (``name[i]`` for a map's child), ``task_run_name`` (as the task's
    ``task_run_name`` made it, else ``task_full_name``), ``map_index``, ``flow_run_id``,
    ``queue``, ``worker``, ``logger``; and, read from Redis the first time one is asked
    for, ``task_run_count`` (1 on the first run, 2 on the first retry or the run after a
    crash...), ``task_tags``, ``flow_name``, ``flow_run_name`` (the run's own name, else
    the flow's), ``deployment`` (the deployment the flow run ran for, "flow/name", else
    None: balancer/serving.py), ``parameters`` (the flow run's, by name: a Prefect 1
    flow's Parameters, a @flow function's arguments; {} when it has none, and without
    those that could not be stored: balancer/parameter.py), ``scheduled_start_time`` (a
    scheduled run's
    due time, else when the run was submitted; an aware UTC datetime), ``date`` (the
    same), and ``today``, ``yesterday``, ``tomorrow`` (``YYYY-MM-DD`` of that date).
    A looping run (Prefect 1's LOOP) also has ``task_loop_count`` (its iteration, from 1)
    and, once it looped, ``task_loop_result`` (what the last LOOP carried; a KeyError
    before, so that ``context.get("task_loop_result", {})`` gives the start).
    Outside a task run each is None, and ``logger`` is the plain ``balancer.task``
    logger."""

    def __getitem__(self, key: str) -> Any:
        if key == LOOP_RESULT:
            facts = _facts.get()
            value = NO_LOOP_RESULT if facts is None else facts.loop_state()[1]
            if value is NO_LOOP_RESULT:
                raise KeyError(key)
            return value
        if key not in KEYS:
            raise KeyError(key)
        facts = _facts.get()
        if facts is None:
            return logging.getLogger(LOGGER) if key == "logger" else None
        if key in _READ:
            return facts.more().get(key)
        if key == "parameters":
            return facts.flow_parameters()
        if key == "task_loop_count":
            return facts.loop_state()[0]
        return getattr(facts, key)

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"balancer.context has no {name!r}; it knows"
                                 f" {', '.join(KEYS)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    def __repr__(self) -> str:
        facts = _facts.get()
        return ("<balancer.context: no task run>" if facts is None else
                f"<balancer.context: task {facts.task_run_id} of flow {facts.flow_run_id}>")


context = Context()

