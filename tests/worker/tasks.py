"""Module-level functions the worker unit tests execute by import path."""

from __future__ import annotations

import asyncio
import os
import sys
import time

from balancer import Task, context, task


@task
def echo(*args: object, **kwargs: object) -> list[object]:
    return [list(args), kwargs]


@task
def boom() -> None:
    raise KeyError("missing")


@task
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


SPUN: list[str] = []  # what spin saw, in this process


@task
def spin(name: str) -> None:
    """Loops in Python until something stops it; notes how it ended."""
    try:
        while True:
            pass
    except BaseException as exc:
        SPUN.append(f"{name}: {type(exc).__name__}")
        raise


@task
def die() -> None:
    os._exit(3)


@task
def pid() -> int:
    return os.getpid()


@task
def unstorable() -> object:
    return object()


@task
def big(n: int) -> bytes:
    return b"x" * n


@task
async def async_nap(seconds: float) -> int:
    """Sleeps on the event loop, then names the loop it ran on."""
    import asyncio

    await asyncio.sleep(seconds)
    return id(asyncio.get_running_loop())


@task
def skips(message: str) -> None:
    from balancer.engine.signals import SKIP

    raise SKIP(message)


@task
def signals_retry() -> None:
    from balancer.engine.signals import RETRY

    raise RETRY("again")


@task(retries=5)
def signals_fail() -> None:
    from balancer.engine.signals import FAIL

    raise FAIL("for good")


class Scale(Task):
    """A Prefect 1 task class with a constructor argument of its own."""

    def __init__(self, factor: int, **kwargs: object) -> None:
        self.factor = factor
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def run(self, x: int) -> int:
        return self.factor * x


class NotATask:
    """A class with a run method that is no balancer.Task: never run by a worker."""

    def run(self) -> str:
        return "should not run"


class Unusual(BaseException):
    """Not an Exception, as some libraries' control-flow errors are not."""


@task
def raises_base(kind: str) -> None:
    """Raises what a task may raise that is not an Exception."""
    if kind == "exit":
        sys.exit(3)
    if kind == "interrupt":
        raise KeyboardInterrupt
    if kind == "unusual":
        raise Unusual("not an Exception")


@task
async def cancelled_by_itself() -> None:
    raise asyncio.CancelledError()


@task
def my_run_id() -> object:
    return context.task_run_id


@task
async def my_run_id_async() -> object:
    await asyncio.sleep(0)
    return context.task_run_id


@task(log_stdout=True)
def chatty(word: str) -> int:
    print("first", word)
    print("no end", end="")
    return 1


@task(log_stdout=True)
async def chatty_async(word: str) -> int:
    await asyncio.sleep(0)
    print("async", word)
    return 2


@task
def plain_print(word: str) -> int:
    print("plain", word)
    return 3


class ChattyClass(Task):
    log_stdout = True

    def run(self, word: str) -> int:
        print("class", word)
        return 4


@task(retries=3)
def ends_in(kind: str) -> object:
    """Returns the state its run ends in (balancer/states.py)."""
    from balancer.states import Completed, Failed

    return Completed(data=7) if kind == "completed" else Failed(message="no")
