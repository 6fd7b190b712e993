"""What a long-lived loop does when Redis fails it: wait, try again, say so once.

Every Redis error is worth retrying on a path that must go on: a connection lost or timed
out, and every error reply too (OOM under ``maxmemory``, READONLY after a failover,
LOADING after a restart, BUSY while a script runs, WRONGTYPE from a key an operator
broke). Redis recovers from all of these without us, and a thread that died on one would
not come back: a 3-second OOM once left a cluster with no worker heartbeating for good.
Only client-side errors (``redis.DataError``, bad arguments) are bugs, not retried.

The dispatcher tells the two kinds of error reply apart (``is_outage``): an outage is
waited out, while an error about particular data (WRONGTYPE, a script's runtime error)
is isolated to that data, since retrying would only repeat it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import redis
from redis.exceptions import RedisClusterException

RETRYABLE: tuple[type[Exception], ...] = (
    redis.ConnectionError, redis.TimeoutError, redis.ResponseError)
# RETRYABLE, and what redis-py's cluster client raises outside redis.RedisError while a
# master fails over (no node answers, a slot without a master): for calls made through
# the client itself (a pipeline) rather than a connection.Direct, which maps them.
RETRYABLE_ON_CLUSTER: tuple[type[Exception], ...] = (*RETRYABLE, RedisClusterException)

# Error replies that say Redis cannot serve right now, whatever the keys (out of memory,
# a read-only replica after a failover, a blocked command unblocked by one, loading its
# data, busy with a script, a failing disk, ...): the same call succeeds later. Any other
# error reply (WRONGTYPE, a script's runtime error, a value that is not a number) is about
# the data of a particular key.
OUTAGE_CODES = frozenset({"OOM", "READONLY", "LOADING", "BUSY", "NOSCRIPT", "MASTERDOWN",
                          "MISCONF", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN", "EXECABORT",
                          "UNBLOCKED"})
_PIPELINE_PREFIX = " of pipeline caused error: "


def error_message(exc: Exception) -> str:
    """An error's message, without the command redis-py prefixes a pipeline's error with."""
    return str(exc).rpartition(_PIPELINE_PREFIX)[2]


def error_code(exc: redis.ResponseError) -> str:
    """The code of an error reply ("WRONGTYPE", "OOM", "ERR" ...). redis-py keeps it apart
    for the codes it maps to classes, and wraps the message of a pipeline's command."""
    return exc.status_code or error_message(exc).split(" ", 1)[0]


def is_outage(exc: BaseException) -> bool:
    """Redis cannot serve at all for now (unreachable, or an error reply of OUTAGE_CODES):
    wait and try again. False for errors about particular data, which retrying repeats."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True
    return isinstance(exc, redis.ResponseError) and error_code(exc) in OUTAGE_CODES

BACKOFF_START = 0.1
# A Redis failover (Sentinel, Cluster) takes 2-3 s: with tries at most 1 s apart, work
# resumes within a second of it (a 5 s cap had every loop wake 3.1 s after the first
# failure, past most failovers). One try a second per loop is no load on a Redis that is
# back, nor on one still down.
BACKOFF_MAX = 1.0

T = TypeVar("T")


class Backoff:
    """Delays that double from ``start`` to ``cap``, and the episode's first failure.

    ``failed`` says whether to log (the first failure of an episode only: a loop that
    retries every 5 s for an hour must not write 720 identical lines); ``recovered``
    whether an episode just ended (log that once too)."""

    def __init__(self, start: float = BACKOFF_START, cap: float = BACKOFF_MAX) -> None:
        self.start = start
        self.cap = cap
        self.delay = 0.0  # 0: not failing

    def failed(self) -> bool:
        """Note a failure; True for the first of an episode. ``delay`` is the wait."""
        first = self.delay == 0.0
        self.delay = self.start if first else min(self.delay * 2, self.cap)
        return first

    def recovered(self) -> bool:
        """Note a success; True when it ends an episode of failures."""
        was = self.delay != 0.0
        self.delay = 0.0
        return was


def persist(what: str, task_id: str, call: Callable[[], T],
            log: logging.Logger | None = None) -> T:
    """Run an idempotent call until Redis takes it, with backoff (a result is never
    dropped because Redis was briefly out of memory or out of reach)."""
    log = log or logging.getLogger("worker")
    backoff = Backoff()
    while True:
        try:
            value = call()
        except RETRYABLE as exc:
            if backoff.failed():
                log.error("task=%s cannot %s (%s); retrying with backoff", task_id, what,
                          describe(exc))
            time.sleep(backoff.delay)
            continue
        if backoff.recovered():
            log.info("task=%s could %s again", task_id, what)
        return value


def wait_out(call: Callable[[], object], log: logging.Logger, waiting: str, served: str,
             stop: threading.Event | None = None,
             passing: Callable[[Exception], bool] = is_outage) -> bool:
    """Run ``call`` until Redis serves it, waiting out an outage (``passing``; by default
    ``is_outage``: out of memory, loading after a restart, unreachable) with backoff:
    ``waiting`` is logged, with the error, at an episode's first failure, and ``served``
    at its end. False if ``stop`` was set meanwhile. Any other refusal (NOPERM from an
    ACL, a key of the wrong type) raises: it would not pass by waiting. For the start of
    a long-lived process, which must not fail because Redis is briefly full or
    restarting."""
    backoff = Backoff()
    while True:
        try:
            call()
        except RETRYABLE as exc:
            if not passing(exc):
                raise
            if backoff.failed():
                log.error("%s (%s); trying again with backoff", waiting, describe(exc))
            if stop is None:
                time.sleep(backoff.delay)
            elif stop.wait(backoff.delay):
                return False
            continue
        if backoff.recovered():
            log.info("%s", served)
        return True


def describe(exc: BaseException) -> str:
    """One line for a log: the error's class and its message."""
    return f"{type(exc).__name__}: {exc}"
