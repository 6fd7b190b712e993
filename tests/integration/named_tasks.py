"""Tasks with run names (task_run_name), for tests/integration/test_run_names.py: workers
import this module."""

from __future__ import annotations

from balancer import runtime, task


@task
def add(x: int, y: int) -> int:
    return x + y


@task(task_run_name="double-{x}")
def double(x: int) -> str | None:
    """Its name is made of an upstream's result, which only the worker knows."""
    return runtime.task_run.name


def _broken_name() -> str:
    raise LookupError("no such customer")


@task(retries=2, retry_delay_seconds=0.01, task_run_name=_broken_name)
def unnamable() -> int:
    return 1


@task(cache_for=3600, task_run_name="cached-{x}")
def cached_square(x: int) -> int:
    return x * x


@task
def parameters_seen() -> dict[str, object]:
    """What the task's run knows of its flow run's parameters, both ways."""
    from balancer import context

    return {"context": context.parameters, "runtime": runtime.flow_run.parameters}
