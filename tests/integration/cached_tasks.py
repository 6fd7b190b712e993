"""Tasks with Prefect 1's cache options, for test_caching: each appends a line to the
file it is given, so that a test counts the runs that really happened."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from balancer import task
from balancer.cache_policies import INPUTS
from balancer.engine.cache_validators import all_inputs, partial_inputs_only
from balancer.tasks import task_input_hash


def _ran(log: str, line: str) -> None:
    with Path(log).open("a") as f:
        f.write(line + "\n")


@task(cache_for=timedelta(hours=1), tags=["io", "slow"])
def slow_square(log: str, x: int) -> int:
    _ran(log, f"square {x}")
    return x * x


@task(cache_for=timedelta(hours=1), cache_validator=all_inputs)
def by_inputs(log: str, x: int) -> int:
    _ran(log, f"by_inputs {x}")
    return x + 100


@task(cache_for=timedelta(hours=1), cache_validator=partial_inputs_only(["x"]))
def by_x(log: str, x: int, note: str = "") -> str:
    _ran(log, f"by_x {x} {note}")
    return f"{x}:{note}"


@task(cache_for=1.0, cache_validator=all_inputs)
def short_lived(log: str, x: int) -> int:
    _ran(log, f"short {x}")
    return x


@task(cache_for=timedelta(hours=1), cache_key="shared-report")
def report_a(log: str) -> str:
    _ran(log, "report_a")
    return "made by a"


@task(cache_for=timedelta(hours=1), cache_key="shared-report")
def report_b(log: str) -> str:
    _ran(log, "report_b")
    return "made by b"


@task
def plus_one(x: int) -> int:
    return x + 1


@task(nout=2, checkpoint=False)
def split(x: int) -> tuple[int, int]:
    return x // 10, x % 10


@task
def add(a: int, b: int) -> int:
    return a + b


# Prefect 2/3's spellings of the same (balancer/caching.py: from_prefect_2).
@task(cache_key_fn=task_input_hash, cache_expiration=timedelta(hours=1))
def by_input_hash(log: str, x: int) -> int:
    _ran(log, f"by_input_hash {x}")
    return x * 10


@task(cache_policy=INPUTS)
def by_policy(log: str, x: int) -> int:
    _ran(log, f"by_policy {x}")
    return x * 100
