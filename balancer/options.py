"""Checks of the numeric options a task or a queue is given, wherever they are given.

Every option ends up in Redis: a priority in a sorted-set score, a retry delay and a
timeout in the scores of ``delayed`` and ``deadlines``, a limit compared in Lua. A value
Redis or Lua cannot take (nan, inf, a float where a count is meant, a priority past what
a double holds exactly) fails a command halfway through a submit, or a script long after
it, so each is refused here, before anything is written, with the task or queue named.
"""

from __future__ import annotations

import datetime as dt
import math
import random
from numbers import Integral, Real
from typing import Any

# Task and queue priorities lie within +-PRIORITY_LIMIT. A task's score is its arrival in
# ms minus priority levels of BALANCER_AGING_SECONDS each, or of STRICT_LEVEL_MS (1e12)
# with aging off: 1000 such levels plus today's clock stay far below 2**53, the largest
# magnitude up to which a sorted-set score (a double) keeps every millisecond apart.
PRIORITY_LIMIT = 1000
# A score beyond this is rounded by Redis, and tasks a millisecond apart would swap places.
EXACT_SCORE_LIMIT = 2**53
# Retry delays double per failure: delay * 2**(retries - 1) stays a finite double up to
# here, and a retry's due time never becomes nan (0 * inf) in fail.lua.
RETRIES_LIMIT = 1000
# Longest timeout or retry delay, in seconds (about 31 years): a longer wait overflows the
# platform's timers (a thread pool's join raises OverflowError from about 1e10 s).
SECONDS_LIMIT = 1e9
# Counts Lua reads back exactly (its numbers are doubles).
COUNT_LIMIT = 2**53


# Most delays a list of retry delays may hold (Prefect's own limit): one per retry, the
# last for any retries past them.
DELAYS_LIMIT = 50
# A retry's delay is jittered to within this many times itself, either way (a delay past
# SECONDS_LIMIT is clamped there).
JITTER_LIMIT = 10


def check_task_options(owner: str, priority: Any, retries: Any, retry_delay: Any,
                       timeout: Any, jitter: Any = None) -> None:
    """Raise ValueError naming ``owner`` (e.g. "task 'fetch'") and the option at fault."""
    if jitter is not None:
        _number(owner, "retry_jitter_factor", jitter)
        if not 0 <= jitter <= JITTER_LIMIT:
            raise ValueError(f"{owner}: retry_jitter_factor must be between 0 and"
                             f" {JITTER_LIMIT}, got {jitter!r}")
    integer(owner, "priority", priority, -PRIORITY_LIMIT, PRIORITY_LIMIT)
    integer(owner, "retries", retries, 0, RETRIES_LIMIT)
    if isinstance(retry_delay, tuple):
        if not 1 <= len(retry_delay) <= DELAYS_LIMIT:
            raise ValueError(f"{owner}: retry_delay: a list of delays must hold 1 to"
                             f" {DELAYS_LIMIT} of them, got {len(retry_delay)}")
        for delay in retry_delay:
            seconds(owner, "retry_delay", delay, positive=False)
    else:
        seconds(owner, "retry_delay", retry_delay, positive=False)
    if timeout is not None:
        seconds(owner, "timeout", timeout, positive=True)


def delay_field(retry_delay: float | tuple[float, ...], retries: int = 0,
                jitter: float | None = None) -> float | str:
    """A checked retry delay as a task's record holds it (fail.lua reads it): a number, the
    first of delays that double; or a list, each delay followed by a comma (``"1,10,"``),
    so that a list of one still reads as a list, whose delays do not double.

    With ``jitter``, each of the task's ``retries`` delays (at most DELAYS_LIMIT: the last
    serves those past it) is drawn here, uniformly within ``jitter`` times itself either
    way (not below 0), and the record holds them as a list: drawn once per task, so that
    tasks failing together retry at different times."""
    if jitter and retries:
        drawn = range(min(retries, DELAYS_LIMIT))
        if isinstance(retry_delay, tuple):
            given = [retry_delay[min(n, len(retry_delay) - 1)] for n in drawn]
        else:
            given = [retry_delay * 2**n for n in drawn]
        retry_delay = tuple(
            min(SECONDS_LIMIT, random.uniform(max(0.0, d * (1 - jitter)), d * (1 + jitter)))
            for d in given)
    if isinstance(retry_delay, tuple):
        return "".join(f"{delay!r}," for delay in retry_delay)
    return retry_delay


def check_queue_options(owner: str, priority: Any, concurrency_limit: Any) -> None:
    """Settings left as None keep what the cluster has, so None is always accepted."""
    if priority is not None:
        integer(owner, "priority", priority, -PRIORITY_LIMIT, PRIORITY_LIMIT)
    if concurrency_limit is not None:
        integer(owner, "concurrency_limit", concurrency_limit, 1, COUNT_LIMIT)


def plain(value: Any) -> Any:
    """A checked number as the int or float redis-py can send (a numpy number it cannot);
    None stays None, and a tuple (a list of retry delays) is made of such numbers."""
    if value is None or type(value) in (int, float):
        return value
    if isinstance(value, tuple):
        return tuple(map(plain, value))
    return int(value) if isinstance(value, Integral) else float(value)


def check_wait(owner: str, timeout: Any) -> None:
    """A client's wait: None (for ever) or a finite number of seconds, not negative (nan
    would wait for ever: no clock is ever past it)."""
    if timeout is not None:
        _number(owner, "timeout", timeout)
        if timeout < 0:
            raise ValueError(f"{owner}: timeout must be >= 0, got {timeout!r}")


def integer(owner: str, option: str, value: Any, low: int, high: int) -> None:
    """An int (bool is refused: True would silently mean 1) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, Integral):
        finite = not isinstance(value, Real) or math.isfinite(value)
        raise ValueError(f"{owner}: {option} must be {'an' if finite else 'a finite'}"
                         f" integer, got {value!r}")
    if not low <= int(value) <= high:
        raise ValueError(f"{owner}: {option} must be between {low} and {high},"
                         f" got {value!r}")


def seconds(owner: str, option: str, value: Any, *, positive: bool) -> None:
    """A finite number of seconds, at most SECONDS_LIMIT; above 0, or at least 0."""
    _number(owner, option, value)
    if positive and value <= 0:
        raise ValueError(f"{owner}: {option} must be positive, got {value!r}")
    if value < 0:
        raise ValueError(f"{owner}: {option} must be >= 0, got {value!r}")
    if value > SECONDS_LIMIT:
        raise ValueError(f"{owner}: {option} must be at most {SECONDS_LIMIT:.0e} seconds,"
                         f" got {value!r}")


def _number(owner: str, option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ValueError(f"{owner}: {option} must be a number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{owner}: {option} must be a finite number, got {value!r}")


def start_ms(owner: str, delay: Any, eta: Any, now_ms: int) -> int | None:
    """When a run given ``delay`` (seconds or a timedelta, from now) or ``eta`` (an aware
    datetime) starts, in epoch ms; None for at once (neither given, or a time past)."""
    if delay is not None and eta is not None:
        raise ValueError(f"{owner}: give delay or eta, not both")
    if delay is not None:
        if isinstance(delay, dt.timedelta):
            delay = delay.total_seconds()
        seconds(owner, "delay", delay, positive=False)
        return now_ms + round(delay * 1000) if delay > 0 else None
    if eta is None:
        return None
    if not isinstance(eta, dt.datetime):
        raise ValueError(f"{owner}: eta must be a datetime, got {eta!r}")
    if eta.tzinfo is None or eta.utcoffset() is None:
        raise ValueError(f"{owner}: eta must be an aware datetime (with a tzinfo, as"
                         f" datetime.now(timezone.utc) + timedelta(hours=1)), got {eta!r}:"
                         " a naive one would mean a different time on each machine")
    at = round(eta.timestamp() * 1000)
    if at - now_ms > SECONDS_LIMIT * 1000:
        raise ValueError(f"{owner}: eta must be at most {SECONDS_LIMIT:.0e} seconds away,"
                         f" got {eta.isoformat()}")
    return at if at > now_ms else None
