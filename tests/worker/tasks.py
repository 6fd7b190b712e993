"""Module-level functions the worker unit tests execute by import path."""

from __future__ import annotations

import os
import time


def echo(*args: object, **kwargs: object) -> list[object]:
    return [list(args), kwargs]


def boom() -> None:
    raise KeyError("missing")


def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def die() -> None:
    os._exit(3)


def pid() -> int:
    return os.getpid()


def unstorable() -> object:
    return object()


def big(n: int) -> bytes:
    return b"x" * n
