"""Prefect 2/3's ``prefect.runtime``: ``runtime.task_run.id``, ``runtime.flow_run.name``...,
read from ``balancer.context`` in a task, and from the open run in a @flow function's
body. Outside both, each is None (Prefect gives empty values there too)."""

from __future__ import annotations

from typing import Any

from balancer import building
from balancer.runcontext import context


class _TaskRun:
    """The task run this code runs in (on a worker)."""

    @property
    def id(self) -> str | None:
        return context.task_run_id  # type: ignore[no-any-return]

    @property
    def name(self) -> str | None:
        """``name``, or ``name[i]`` for a map's child."""
        return context.task_full_name  # type: ignore[no-any-return]

    @property
    def task_name(self) -> str | None:
        return context.task_name  # type: ignore[no-any-return]

    @property
    def run_count(self) -> int | None:
        return context.task_run_count  # type: ignore[no-any-return]

    @property
    def tags(self) -> list[str]:
        return list(context.task_tags or [])


class _FlowRun:
    """The flow run: the task's (on a worker), or the @flow function's own (in its body)."""

    @property
    def id(self) -> str | None:
        run = building.current_run()
        return run.id if run is not None else context.flow_run_id  # type: ignore[no-any-return]

    @property
    def name(self) -> str | None:
        """The flow's name (runs here have no names of their own)."""
        run = building.current_run()
        return run.name if run is not None else context.flow_name  # type: ignore[no-any-return]

    flow_name = name

    @property
    def scheduled_start_time(self) -> Any:
        return None if building.current_run() is not None else context.scheduled_start_time


task_run = _TaskRun()
flow_run = _FlowRun()

__all__ = ["flow_run", "task_run"]
