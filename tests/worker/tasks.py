"""Module-level functions the worker unit tests execute by import path."""

from __future__ import annotations

import os
import time

from balancer import task


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
