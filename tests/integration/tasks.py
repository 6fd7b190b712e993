"""Tasks the integration tests run; workers import them as ``tests.integration.tasks``."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from datetime import datetime
from typing import Any

import redis

from balancer import Task, context, task
from balancer.control_flow import FilterTask


@task
def constant(value: int) -> int:
    return value


@task
def add(a: int, b: int) -> int:
    return a + b


@task
def multiply(a: int, b: int = 2) -> int:
    return a * b


@task
def total(values: list[int]) -> int:
    return sum(values)


@task
def square(x: int) -> int:
    return x * x


@task(retries=2, retry_delay=0.05)
def always_fails(x: int) -> int:
    raise ValueError(f"bad input {x}")


@task
def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task(timeout=0.5)
def hangs() -> None:
    time.sleep(60)


@task
def returns_a_complex() -> object:
    return 1 + 2j


@task
def whoami() -> int:
    return os.getpid()


@task
def record(url: str, key: str, label: str) -> str:
    """Append ``label`` to a Redis list: tests read the order tasks ran in."""
    redis.Redis.from_url(url).rpush(key, label)
    return label


@task(queue_name="high")
def record_high(url: str, key: str, label: str) -> str:
    return record.fn(url, key, label)


@task(queue_name="low")
def record_low(url: str, key: str, label: str) -> str:
    return record.fn(url, key, label)


@task
def crash_unless(url: str, key: str) -> str:
    """Kills the process running it until ``key`` exists in Redis."""
    if not redis.Redis.from_url(url).exists(key):
        os._exit(17)
    return "survived"


@task
def kill_my_worker() -> None:
    """Kills the whole worker process (the supervisor too, in a thread pool)."""
    os.kill(os.getpid(), 9)


@task(timeout=0.3)
def short_timeout(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task
def wait_for_gate(url: str, key: str, seconds: float) -> bool:
    """Run until ``key`` gets an entry (True), or for ``seconds`` (False): a long run whose
    end the test decides, so that no clock margin does. Waits a second at a time: redis-py
    times a read out after 5 s."""
    client = redis.Redis.from_url(url)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.blpop([key], timeout=1) is not None:
            return True
    return False


@task
def note_pid_and_sleep(url: str, key: str, seconds: float) -> int:
    """Push this process's pid onto ``key``, then sleep: a long run whose process a test
    watches."""
    redis.Redis.from_url(url).rpush(key, os.getpid())
    time.sleep(seconds)
    return os.getpid()


@task
def note_start(url: str, key: str) -> str:
    """Push "started" onto ``key``: a test sees whether this task ever ran."""
    redis.Redis.from_url(url).rpush(key, "started")
    return "ran"


@task
def note_then_wait_for_gate(url: str, key: str, gate: str, seconds: float) -> bool:
    """Push "started" onto ``key``, then run until ``gate`` gets an entry (True) or for
    ``seconds`` (False)."""
    redis.Redis.from_url(url).rpush(key, "started")
    return bool(wait_for_gate.fn(url, gate, seconds))


@task
def numbers(n: int) -> list[int]:
    return list(range(n))


@task
def double(x: int) -> int:
    return 2 * x


@task
def zeros(n: int) -> list[int]:
    return [0] * n


@task
def raises(message: str) -> None:
    """Fails with ``message`` as its error: what an attacker may make a task say."""
    raise ValueError(message)


@task(tags=["db"])
def db_counted(url: str, key: str, seconds: float) -> int:
    """Count itself in ``key`` while it runs and note the count it saw on ``key:seen``: a
    test reads how many tasks tagged "db" ran at once."""
    client = redis.Redis.from_url(url)
    running = int(client.incr(key))
    client.rpush(f"{key}:seen", running)
    time.sleep(seconds)
    client.decr(key)
    return running


@task
def counted(url: str, key: str, seconds: float) -> int:
    """``db_counted`` without a tag of its own: a ``with tags("db")`` block gives it one."""
    return int(db_counted.fn(url, key, seconds))


@task
def square_elsewhere(x: int) -> int:
    """Submits ``square`` as a run of its own and waits for it: a task calling a task."""
    return int(square.submit(x).result(timeout=60))


@task
def limited(url: str, key: str, seconds: float) -> int:
    """``counted`` inside ``with concurrency("db")``: a test reads how many ran at once."""
    from balancer.concurrency.sync import concurrency

    with concurrency("db", timeout_seconds=60):
        return int(db_counted.fn(url, key, seconds))


@task
def rate_limited(url: str, key: str) -> int:
    """Through ``rate_limit("api")``; notes on ``key`` when it began waiting and when it
    was through ("before after", Redis's clock in ms, which the limit's script reads)."""
    from balancer.concurrency.sync import rate_limit

    client = redis.Redis.from_url(url)

    def now_ms() -> int:
        seconds, micros = client.time()
        return int(seconds * 1000 + micros // 1000)

    before = now_ms()
    rate_limit("api", timeout_seconds=60)
    after = now_ms()
    client.rpush(key, f"{before} {after}")
    return after


@task(tags=["db"])
def db_hang_first_run(url: str, key: str) -> int:
    """Tagged "db": its first run notes its pid on ``key`` and hangs (its worker is to be
    killed); a later run returns at once."""
    client = redis.Redis.from_url(url)
    if client.rpush(key, os.getpid()) == 1:
        time.sleep(120)
    return os.getpid()


@task(retries=0)
def exits(code: int) -> None:
    sys.exit(code)


@task(retries=0)
def interrupts() -> None:
    raise KeyboardInterrupt


@task
def leaves_a_thread_running(seconds: float) -> str:
    """Starts a thread that is not a daemon, as a careless task would (a process's main
    thread makes them so): it outlives the task."""
    thread = threading.Thread(target=time.sleep, args=(seconds,), daemon=False)
    thread.start()
    return "left"


_kept: list[bytes] = []


@task
def grows(mb: int) -> int:
    """Keeps ``mb`` megabytes for the rest of its process's life, as a leak would; its pid."""
    _kept.append(os.urandom(1) * (mb << 20))
    return os.getpid()


def _facts(fail_first: bool) -> dict[str, object]:
    """What balancer.context says inside this run (dates as ISO text), after one line
    logged through its logger; the first run fails when asked."""
    context.logger.info("reading my run's facts")
    if fail_first and context.task_run_count == 1:
        raise ValueError("the first run fails")
    return {key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in context.items() if key != "logger"}


@task(retries=1, tags=["facts", "ctx"])
def run_facts(fail_first: bool = False) -> dict[str, object]:
    return _facts(fail_first)


@task(retries=1, timeout=60)
def run_facts_in_time(fail_first: bool = False) -> dict[str, object]:
    """The same with a timeout: a thread-pool slot runs it on a thread of its own."""
    return _facts(fail_first)


@task(log_stdout=True)
def says(word: str) -> str:
    """Prints two lines: with log_stdout, each is a line of the worker's log with its ids."""
    print(f"saying {word}")
    print("and done")
    return word


class Scale(Task):
    """A task class built with an argument of its own: the worker builds it again with it."""

    def __init__(self, factor: int, **options: Any) -> None:
        self.factor = factor
        super().__init__(**options)

    def run(self, x: int) -> int:
        return x * self.factor


def _spin_noting(url: str, key: str) -> None:
    client = redis.Redis.from_url(url)
    client.rpush(key, "started")
    try:
        while True:
            pass
    except BaseException as exc:
        client.rpush(key, type(exc).__name__)
        raise


@task
def spin_noting(url: str, key: str) -> None:
    """Push "started" onto ``key``, loop in Python until something stops it, then push
    the name of what did."""
    _spin_noting(url, key)


@task(timeout=1.0)
def spin_noting_past_1s(url: str, key: str) -> None:
    """``spin_noting`` with a timeout of 1 s."""
    _spin_noting(url, key)


@task(timeout=1.0)
def starts_a_helper(marker: str, then_sleep: float, own_session: bool = False) -> int:
    """Start a helper process (as a task starts a browser or ffmpeg), then sleep: past
    the timeout when ``then_sleep`` is long. Its id, for the test to look for."""
    import subprocess

    helper = subprocess.Popen(["sh", "-c", f"sleep 120; echo {marker}"],
                              start_new_session=own_session)
    time.sleep(then_sleep)
    return helper.pid


@task(retries=0)
def hold_the_gil(seconds: float) -> float:
    """Hold Python's lock for about ``seconds``: a regular expression backtracking in C,
    2**n steps, n grown until one run takes that long."""
    started = time.monotonic()
    n = 16
    while time.monotonic() - started < seconds:
        re.match(r"(a+)+$", "a" * n + "b")
        n += 1
    return time.monotonic() - started


@task
def fails_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


class KeepEven(FilterTask):
    """A filter of one's own: a method of a subclass, which the worker imports."""

    def filter_func(self, item: Any) -> bool:
        return item is not None and item % 2 == 0

    def log_func(self, kept: list[Any]) -> str | None:
        return f"kept {len(kept)} even results"
