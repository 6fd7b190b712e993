"""Prefect 1's ``prefect.executors``, so that its flows keep their imports: here the
cluster's workers run every task, so an executor given to ``Flow(executor=...)`` or
``flow.run(executor=...)`` is kept and changes nothing (the parallelism is the workers'
slots: ``worker start --concurrency N``)."""

from __future__ import annotations

from typing import Any


class Executor:
    """Takes whatever Prefect 1's executors take, and keeps it (``.options``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.options = kwargs

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: the cluster's workers run the tasks>"


class LocalExecutor(Executor):
    pass


class LocalDaskExecutor(Executor):
    pass


class DaskExecutor(Executor):
    pass


__all__ = ["DaskExecutor", "Executor", "LocalDaskExecutor", "LocalExecutor"]
