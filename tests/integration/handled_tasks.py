"""Tasks with Prefect 1's state handlers for tests/integration/test_state_handlers.py:
each handler appends a line to the file $HANDLED_LOG, written by whichever process runs it
(a worker's pool child)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from balancer import task
from balancer.engine.cache_validators import all_inputs


def _write(line: str) -> None:
    with open(os.environ["HANDLED_LOG"], "a") as out:
        out.write(f"{line} pid={os.getpid()}\n")


def note(obj: Any, old: Any, new: Any) -> None:
    result = new.result  # a failed run's is its error (an ErrorInfo)
    shown = f"{result.type}: {result.message}" if hasattr(result, "traceback") else repr(result)
    _write(f"{obj.name} {type(old).__name__} -> {type(new).__name__} {shown}")


def alert(obj: Any, state: Any) -> None:
    _write(f"on_failure {obj.name} {type(state).__name__} {state.message}")


@task(retries=1, retry_delay=0.05, state_handlers=[note], on_failure=alert)
def flaky(x: int) -> int:
    raise ValueError(f"no luck with {x}")


@task(state_handlers=[note], on_failure=alert)
def triple(x: int) -> int:
    return 3 * x


# Prefect 2/3's hooks: each notes (hook, task or flow, state name, run count) in HOOKED
# (for a worker of threads in the test's own process: tests/integration/test_state_handlers.py).
HOOKED: list[tuple[str, str, str, int]] = []


def completed(obj: Any, run: Any, state: Any) -> None:
    HOOKED.append(("completed", obj.name, state.name, run.run_count))


def failed(obj: Any, run: Any, state: Any) -> None:
    HOOKED.append(("failed", obj.name, state.name, run.run_count))


@task(retries=1, retry_delay_seconds=0.05, on_completion=[completed], on_failure=[failed])
def halve(x: int) -> float:
    if x % 2:
        raise ValueError(f"{x} is odd")
    return x / 2


@task(retries=1, retry_delay=0.05, timeout=0.5, state_handlers=[note], on_failure=alert)
def stalls() -> None:
    time.sleep(30)


@task(timeout=0.5, state_handlers=[note], on_failure=alert)
def loops() -> None:
    for _ in range(300):  # back in Python every 0.1 s: a thread pool can stop it
        time.sleep(0.1)


@task(cache_for=3600, cache_validator=all_inputs, state_handlers=[note])
def cached_square(x: int) -> int:
    return x * x


def transient_only(obj: Any, run: Any, state: Any) -> bool:
    """Prefect 3's retry_condition_fn: retry what a connection lost, nothing else."""
    return isinstance(state.result(raise_on_failure=False), ConnectionError)


@task(retries=2, retry_delay=0.05, retry_condition_fn=transient_only)
def fetches(kind: str) -> None:
    raise {"connection": ConnectionError, "value": ValueError}[kind](kind)


def timeouts_only(obj: Any, run: Any, state: Any) -> bool:
    return isinstance(state.result(raise_on_failure=False), TimeoutError)


def never(obj: Any, run: Any, state: Any) -> bool:
    return False


@task(retries=2, retry_delay=0.05, timeout=0.3, retry_condition_fn=timeouts_only)
def overruns_retried() -> None:
    for _ in range(100):
        time.sleep(0.05)


@task(retries=2, retry_delay=0.05, timeout=0.3, retry_condition_fn=never)
def overruns_not_retried() -> None:
    for _ in range(100):
        time.sleep(0.05)


def slow_alert(obj: Any, state: Any) -> None:
    """A handler slower than the thread pool's re-interrupt of a stopped run (every 1 s),
    back in Python every 0.1 s, where an interrupt would land."""
    for _ in range(25):
        time.sleep(0.1)
    _write(f"slow on_failure {obj.name} {type(state).__name__}")


@task(timeout=0.5, on_failure=slow_alert)
def loops_then_alerts_slowly() -> None:
    for _ in range(300):
        time.sleep(0.1)


def hook_failed(obj: Any, run: Any, state: Any) -> None:
    """Prefect 2/3's on_failure hook."""
    _write(f"hook failed {obj.name} {state.name} run_count={run.run_count}")


@task(state_handlers=[note], on_failure=alert)
def dies() -> None:
    """Kills the process running it, as the kernel's OOM killer would."""
    os.kill(os.getpid(), signal.SIGKILL)


@task(on_failure=[hook_failed])
def dies_hooked() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def slow_note(obj: Any, old: Any, new: Any) -> None:
    """A state handler that takes a while to tell of a retry: the process calling it may
    die meanwhile (the task, put back, came to it again and killed it)."""
    if type(new).__name__ == "Retrying":
        time.sleep(3)
    note(obj, old, new)


@task(state_handlers=[slow_note])
def dies_under_its_handler() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
