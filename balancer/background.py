"""A task submitted outside any flow: ``t.submit(...)`` or ``t.delay(...)``, as Prefect 3
runs a task called outside a flow (and its ``delay`` hands it to task workers).

It becomes a flow run of its own, of that one task, named after it, submitted to the
cluster as ``flow.submit()`` finds it (``BALANCER_REDIS_URL``, else the embedded one), and
the call returns the task's future at once (``.result()``, ``.wait()``, ``.state``).
Futures among its arguments (also in lists, tuples and dicts), and those in
``wait_for``, are waited for first, here: a task of another run cannot be an upstream of
this one, so their results are passed as values (a failed one raises its TaskFailed,
and nothing is submitted; under allow_failure, it passes None).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from balancer.futures import TaskFuture, wait_all

if TYPE_CHECKING:
    from balancer.task import Task


def submit(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any],
           wait_for: Iterable[Any] | None = None) -> TaskFuture:
    from balancer.dynamic import upstream_in
    from balancer.flow import Flow
    from balancer.flowfn import results_of

    wait_all(upstream_in(task.name, wait_for or (), "wait_for")[0])
    with Flow(task.name) as flow:
        node = task(*results_of(list(args)), **results_of(kwargs))
    run = flow.submit()
    return TaskFuture(run.client, run.keys, run.ids[node], task.name)
