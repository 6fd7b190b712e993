"""Prefect 2/3's ``prefect.task_runners`` (and ``prefect_dask``'s ``DaskTaskRunner``), so
that ``@flow(task_runner=...)`` keeps its imports: here the cluster's workers run every
task a @flow function submits, so a task runner is kept and changes nothing (the
parallelism is the workers' slots: ``worker start --concurrency N``), as Prefect 1's
executors are (balancer/executors.py). Only ``SequentialTaskRunner`` is refused: it
promises that submitted tasks run one at a time, which the workers do not keep."""

from __future__ import annotations

from balancer.executors import Executor


class TaskRunner(Executor):
    """Takes whatever Prefect's task runners take, and keeps it (``.options``)."""


class ThreadPoolTaskRunner(TaskRunner):
    pass


class ConcurrentTaskRunner(TaskRunner):
    pass


class SequentialTaskRunner(TaskRunner):
    """Refused by @flow: its one task at a time is not what the workers do."""


class DaskTaskRunner(TaskRunner):
    pass


class RayTaskRunner(TaskRunner):
    pass


__all__ = ["ConcurrentTaskRunner", "DaskTaskRunner", "RayTaskRunner", "SequentialTaskRunner",
           "TaskRunner", "ThreadPoolTaskRunner"]
