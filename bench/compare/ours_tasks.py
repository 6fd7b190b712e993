"""Our tasks for the comparison; workers import them as ``bench.compare.ours_tasks``."""

from __future__ import annotations

from balancer import task
from bench.compare import work

QUEUE = "bench"
HIGH = "bench-high"
LOW = "bench-low"
SIM = "bench-sim"


@task(queue_name=QUEUE)
def noop(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("noop", key, tag, arg)


@task(queue_name=QUEUE)
def sleep(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


@task(queue_name=QUEUE)
def cpu(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("cpu", key, tag, arg)


@task(queue_name=HIGH)
def sleep_high(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


@task(queue_name=LOW)
def sleep_low(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


@task(queue_name=QUEUE)
def step(*upstream: object) -> None:
    """A link of the layered flow: takes its upstream results, returns nothing."""
    return None


# Killed with its pool child at its timeout (bench/replace_bench.py times the child's
# replacement).
STUCK_TIMEOUT_S = 0.5


@task(queue_name=QUEUE, timeout=STUCK_TIMEOUT_S, retries=0)
def stuck(key: str, tag: str, arg: float = 0.0) -> None:
    work.run("sleep", key, tag, arg)


@task(queue_name=SIM)
def simulated(i: int) -> None:
    """Never run: the simulated workers of workload 7 acknowledge it without running it."""
    return None


BY_KIND = {"noop": noop, "sleep": sleep, "cpu": cpu}
BY_PRIORITY = {"high": sleep_high, "low": sleep_low}
