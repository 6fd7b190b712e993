"""Tasks that wait on I/O between their calls to Redis, as a wide thread pool runs them."""

from __future__ import annotations

import time

from balancer import task
from balancer.variables import Variable


@task
def seed() -> int:
    return 1


@task(retries=0)
def reads_and_waits(x: int, i: int) -> int:
    """Reads a Variable five times, waiting 50 ms between reads (a remote call)."""
    for _ in range(5):
        Variable.get("endpoint", default="x")
        time.sleep(0.05)
    return x + i
