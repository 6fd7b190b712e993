"""Tasks for the argument-type and async-task tests; workers import them as
``tests.integration.typed_tasks`` (the registration below runs on both sides)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, NamedTuple

from balancer import register_type, task


@dataclass(frozen=True)
class Money:
    """A registered type: it comes back as itself."""

    amount: Any  # a Decimal
    currency: str


register_type(Money, 16)


@dataclass
class Point:
    """Not registered: it arrives as a dict."""

    x: int
    y: int


class Pair(NamedTuple):
    left: int
    right: str


@task
def echo(value: Any) -> list[Any]:
    """The value as the worker received it, and its type's name there."""
    return [value, type(value).__name__]


@task
def point(x: int, y: int) -> Point:
    return Point(x, y)


@task
async def async_double(x: int) -> int:
    await asyncio.sleep(0.01)
    return 2 * x


@task(timeout=0.5)
async def async_hangs() -> None:
    await asyncio.sleep(60)


@task
async def async_raises() -> None:
    await asyncio.sleep(0)
    raise ValueError("async boom")


@task
async def same_loop() -> int:
    """An id of the event loop this task ran on: a slot keeps its loop."""
    return id(asyncio.get_running_loop())
