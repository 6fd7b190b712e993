"""Tasks of the security tests; workers import them as ``tests.integration.secure_tasks``."""

from __future__ import annotations

import time
from pathlib import Path

from balancer import task


@task(retries=2, retry_delay=0.05)
def flaky(marker: str, value: int) -> int:
    """Fails on its first run and completes on the next: a retry that succeeds."""
    path = Path(marker)
    if not path.exists():
        path.write_text("failed once")
        raise RuntimeError("the first run fails")
    return value


@task(timeout=60)
def plus(a: int, b: int) -> int:
    """With a timeout: its lease carries a deadline the dispatcher watches."""
    return a + b


@task(task_run_name="double-{a}")
def double(a: int) -> int:
    """Named: its worker records each run's name (name_run.lua), under its ACL user too."""
    return 2 * a


@task(retries=1, retry_delay=0.05)
def broken(value: int) -> int:
    raise ValueError(f"broken on {value}")


@task
def guarded(a: int, hold: float = 0.0) -> int:
    """Holds a slot of the "db" concurrency limit for ``hold`` seconds (renewing its lease
    meanwhile, when the lease is shorter), under the worker's ACL user."""
    from balancer.concurrency.sync import concurrency

    with concurrency("db", timeout_seconds=30):
        time.sleep(hold)
        return 2 * a
