"""No-op tasks for the cluster benchmark; workers import them as ``bench.tasks``."""

from __future__ import annotations

from balancer import task


@task(queue_name="bench")
def noop(i: int = 0) -> None:
    """Do nothing: the benchmark measures the cluster, not the task. Queue: bench."""
    return None
