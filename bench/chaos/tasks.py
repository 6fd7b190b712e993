"""Tasks of the chaos run (``bench.chaos.driver``), of the partition test and of
``bench/recovery_bench.py``.

Workers import this module as ``bench.chaos.tasks`` (they start in the repository's
folder, which allows it), so it imports nothing of pytest nor of the driver.

Every chaos task records each of its executions in a Redis list of the test's namespace
("label|worker|pid"), so the driver can count how often each task really ran and on which
worker. A worker is named by the ``CHAOS_WORKER`` variable its starter sets; a process-pool
child inherits it, so an execution is attributed correctly even in a child.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from typing import Any

import redis
from balancer.common.keys import Keys

from balancer import task

WORKER_ENV = "CHAOS_WORKER"
MODULUS = 1_000_000_007

_clients: dict[tuple[int, str], redis.Redis] = {}
_clients_lock = threading.Lock()


def _redis(url: str) -> redis.Redis:
    """One client per process and URL (pool children and threads reuse it)."""
    key = (os.getpid(), url)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = redis.Redis.from_url(url)
        return client


def executions_key(namespace: str) -> str:
    """The execution log of a test, inside its namespace (so it is dropped with it)."""
    return Keys(namespace).prefix + "chaos:executions"


def worker_name() -> str:
    return os.environ.get(WORKER_ENV, f"pid-{os.getpid()}")


def combine(salt: int, inputs: Iterable[int]) -> int:
    """The value a chaos step returns: deterministic and sensitive to order and to every input."""
    value = salt % MODULUS
    for i, x in enumerate(inputs):
        value = (value * 1_000_003 + int(x) + i) % MODULUS
    return value


# -- tasks -----------------------------------------------------------------------------


@task
def step(log: list[str], label: str, salt: int, inputs: list[int], pause: float) -> int:
    """Record this execution, sleep ``pause`` seconds, return ``combine(salt, inputs)``."""
    url, key = log
    _redis(url).rpush(key, f"{label}|{worker_name()}|{os.getpid()}")
    if pause > 0:
        time.sleep(pause)
    return combine(salt, inputs)


@task
def hold(url: str, release_key: str, seconds: float, started_key: str = "") -> str:
    """Run until ``release_key`` exists (or ``seconds`` pass); return the worker's name.

    With ``started_key``, first record "worker|wall-clock time" there: when it really began.
    """
    client = _redis(url)
    if started_key:
        client.rpush(started_key, f"{worker_name()}|{time.time():.6f}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not client.exists(release_key):
        time.sleep(0.02)
    return worker_name()


@task
def sleep_then_name(seconds: float) -> str:
    """Sleep, then return the name of the worker that ran this."""
    time.sleep(seconds)
    return worker_name()


@task
def name_of_worker() -> str:
    return worker_name()


@task
def echo(value: Any) -> Any:
    return value
