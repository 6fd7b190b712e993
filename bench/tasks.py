"""No-op tasks for the cluster benchmark; workers import them as ``bench.tasks``."""

from __future__ import annotations

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
