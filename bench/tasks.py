"""No-op tasks for the cluster benchmark; workers import them as ``bench.tasks``."""

from __future__ import annotations

import time

from balancer import task


@task(queue_name="bench")
def noop(i: int = 0) -> None:
    """Do nothing: the benchmark measures the cluster, not the task. Queue: bench."""
    return None


@task(queue_name="bench")
def numbers(n: int) -> list[int]:
    """A list of n items, for the map benchmark to map over."""
    return list(range(n))


@task(queue_name="bench")
def double(x: int) -> int:
    return 2 * x


@task(queue_name="bench")
def total(xs: list[int]) -> int:
    return sum(xs)


@task(queue_name="bench")
def nap(seconds: float, i: int = 0) -> None:
    """Sleep: the makespan workload's long and short tasks. Queue: bench."""
    time.sleep(seconds)


@task(queue_name="bench-high")
def nap_high(seconds: float, i: int = 0) -> None:
    """Sleep, queued on bench-high (the priority check sets it above bench-low)."""
    time.sleep(seconds)


@task(queue_name="bench-low")
def nap_low(seconds: float, i: int = 0) -> None:
    """Sleep, queued on bench-low."""
    time.sleep(seconds)
