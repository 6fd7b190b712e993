"""Prefect 2/3's ``prefect.runtime``: ``runtime.task_run.id``, ``runtime.flow_run.name``...,
read from ``balancer.context`` in a task, and from the open run in a @flow function's
body. Outside both, each is None (Prefect gives empty values there too)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from balancer import building, runcontext
from balancer.runcontext import context


class _TaskRun:
    """The task run this code runs in (on a worker)."""

    @property
    def id(self) -> str | None:
        return context.task_run_id  # type: ignore[no-any-return]

    @property
    def name(self) -> str | None:
        """As its task's ``task_run_name`` made it, else ``name`` (``name[i]`` for a map's
        child)."""
        return context.task_run_name  # type: ignore[no-any-return]

    @property
    def task_name(self) -> str | None:
        return context.task_name  # type: ignore[no-any-return]

    @property
    def run_count(self) -> int | None:
        return context.task_run_count  # type: ignore[no-any-return]

    @property
    def tags(self) -> list[str]:
        return list(context.task_tags or [])

    @property
    def parameters(self) -> dict[str, Any]:
        """The run's arguments by parameter name, as the task received them."""
        facts = runcontext.current()
        return facts.task_parameters if facts is not None else {}


class _FlowRun:
    """The flow run: the task's (on a worker), or the @flow function's own (in its body)."""

    @property
    def id(self) -> str | None:
        run = building.current_run()
        return run.id if run is not None else context.flow_run_id  # type: ignore[no-any-return]

    @property
    def name(self) -> str | None:
        """The run's own name (``flow_run_name``), else the flow's."""
        run = building.current_run()
        if run is None:
            return context.flow_run_name or context.flow_name  # type: ignore[no-any-return]
        return run.run_name if run.run_name is not None else run.name  # type: ignore[no-any-return]

    @property
    def flow_name(self) -> str | None:
        run = building.current_run()
        return run.name if run is not None else context.flow_name  # type: ignore[no-any-return]

    @property
    def parameters(self) -> dict[str, Any]:
        """The run's parameters: in a @flow function's body (and its ``flow_run_name``
        function) its arguments; in a task, as its run's record keeps them
        (``balancer.context.parameters``)."""
        run = building.current_run()
        if run is not None:
            return dict(run.parameters)
        return dict(context.parameters or {})

    @property
    def scheduled_start_time(self) -> Any:
        return None if building.current_run() is not None else context.scheduled_start_time


class _Deployment:
    """The deployment the flow run runs for (``flow.serve``: balancer/serving.py); None
    for each when it runs for none."""

    @property
    def id(self) -> str | None:
        """Its full name, ``flow-name/deployment-name`` (the identity of a deployment here)."""
        run = building.current_run()
        if run is not None:
            return getattr(run, "deployment", None)
        return context.deployment  # type: ignore[no-any-return]

    @property
    def name(self) -> str | None:
        full = self.id
        return full.partition("/")[2] if full else None

    @property
    def flow_run_id(self) -> str | None:
        return flow_run.id if self.id else None


task_run = _TaskRun()
flow_run = _FlowRun()
deployment = _Deployment()


class MissingContextError(RuntimeError):
    """Prefect's: ``get_run_context()`` outside a flow or task run."""


@dataclass(frozen=True)
class _Named:
    name: str


@dataclass(frozen=True)
class TaskRunContext:
    """Prefect's ``TaskRunContext``, as a task reads it on its worker."""

    task: _Named
    task_run: _TaskRun
    parameters: dict[str, Any]


@dataclass(frozen=True)
class FlowRunContext:
    """Prefect's ``FlowRunContext``, as a @flow function's body reads it."""

    flow: _Named
    flow_run: _FlowRun
    parameters: dict[str, Any]


def get_run_context() -> TaskRunContext | FlowRunContext:
    """Prefect's ``get_run_context()``: in a task, its run's context (``.task_run.id``,
    ``.task.name``, ``.parameters``); in a @flow function's body, its run's
    (``.flow_run.id``, ``.flow.name``, ``.parameters``); elsewhere MissingContextError."""
    facts = runcontext.current()
    if facts is not None:
        return TaskRunContext(_Named(facts.task_name), task_run, facts.task_parameters)
    run = building.current_run()
    if run is not None:
        return FlowRunContext(_Named(run.name), flow_run, flow_run.parameters)
    raise MissingContextError("No run context available. You are not in a flow or task run"
                              " context.")


__all__ = ["FlowRunContext", "MissingContextError", "TaskRunContext", "deployment",
           "flow_run", "get_run_context", "task_run"]
