"""The task bodies every system runs, and how they report back.

A task records ``tag|start|finish|worker index|pid`` on a list of the record Redis
(``BENCH_RECORD_URL``); the worker index comes from ``BENCH_WORKER_INDEX``, which the
harness sets per worker command and every pool child inherits.
"""

from __future__ import annotations

import os
import time

import redis

_client: tuple[int, redis.Redis] | None = None


def _record_client() -> redis.Redis:
    """One connection per process (re-made after a fork: pool children get their own)."""
    global _client
    if _client is None or _client[0] != os.getpid():
        _client = (os.getpid(), redis.Redis.from_url(os.environ["BENCH_RECORD_URL"]))
    return _client[1]


def record(key: str, tag: str, start: float, finish: float) -> None:
    worker = os.environ.get("BENCH_WORKER_INDEX", "-1")
    _record_client().rpush(key, f"{tag}|{start:.6f}|{finish:.6f}|{worker}|{os.getpid()}")


def spin(iterations: int) -> int:
    """CPU-bound work that holds the GIL: a fixed number of loop turns."""
    x = 0
    for i in range(iterations):
        x += i * i
    return x


def run(kind: str, key: str, tag: str, arg: float = 0.0) -> None:
    """Do the work of ``kind`` (noop, sleep: ``arg`` seconds, cpu: ``arg`` turns), record it."""
    start = time.time()
    if kind == "sleep":
        time.sleep(arg)
    elif kind == "cpu":
        spin(int(arg))
    record(key, tag, start, time.time())
