"""Prefect 1's task classes: ``class Load(Task): def run(self, rows): ...``.

A worker never unpickles an instance: the task record names the class by import path
(``module:Load``), the worker imports it under the same allowlist as any task (the class
must live in an allowed module and derive from ``balancer.Task``), builds an instance
with the arguments the client gave its constructor (sent as msgpack with the call's
arguments, Task's own options left out: the worker does not need them) and calls ``run``.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from balancer.common.importpath import INIT_KEYWORD, task_path

if TYPE_CHECKING:
    from balancer.task import Task


def bind(task: Task) -> None:
    """A task class's instance runs its ``run`` method; its name defaults to the class's."""
    from balancer.task import Task

    cls = type(task)
    if cls is Task or cls.run is Task.run:
        raise TypeError(f"{cls.__name__}: a task needs a function (@task) or, in a Task"
                        " subclass, a run method")
    task.fn = task.run
    if not task.name:
        task.name = cls.__name__


def path(task: Task) -> str:
    """The import path of the task's class: what a worker imports."""
    return task_path(type(task))


def init_arguments(task: Task) -> list[Any] | None:
    """The constructor's arguments a worker builds the instance with (None for a
    ``@task`` function): positional ones, and keywords other than Task's own options."""
    from balancer.task import Task

    if type(task) is Task:
        return None
    args, kwargs = getattr(task, "_init_args", ((), {}))
    options = {f.name for f in dataclasses.fields(Task)}
    return [list(args), {k: v for k, v in kwargs.items() if k not in options}]


def log_stdout(task: Task) -> bool:
    """A task class's ``log_stdout``: the worker reads it from the class (its constructor's
    options do not travel), so it is set in the class body; given to the constructor it
    would be ignored there, and is refused here."""
    kwargs: dict[str, Any] = getattr(task, "_init_args", ((), {}))[1]
    declared = getattr(type(task), "log_stdout", False) is True
    if "log_stdout" in kwargs and bool(kwargs["log_stdout"]) != declared:
        raise ValueError(f"task class {type(task).__qualname__}: give log_stdout in its body"
                         f" (log_stdout = {bool(kwargs['log_stdout'])}), where workers read"
                         " it, not to its constructor")
    return declared


# What a worker reads from the task as its module defines it, besides log_stdout: code,
# which never travels (common/statehandlers.py, worker/statehooks.py).
HANDLERS = ("state_handlers", "on_failure", "on_completion", "retry_condition_fn")


def handlers(task: Task) -> tuple[Any, Any, Any, Any]:
    """A task class's ``HANDLERS``, as its body sets them: the worker reads them from the
    class, as ``log_stdout``; given to the constructor they are refused."""
    kwargs: dict[str, Any] = getattr(task, "_init_args", ((), {}))[1]
    cls = type(task)
    for name in HANDLERS:
        if name in kwargs and kwargs[name] != getattr(cls, name, None):
            raise ValueError(f"task class {cls.__qualname__}: give {name} in its body"
                             f" ({name} = ...), where workers read it, not to its"
                             " constructor")
    state_handlers, on_failure, on_completion, retry_condition_fn = (
        getattr(cls, n, None) for n in HANDLERS)
    return state_handlers, on_failure, on_completion, retry_condition_fn


__all__ = ["INIT_KEYWORD", "bind", "handlers", "init_arguments", "log_stdout", "path"]
