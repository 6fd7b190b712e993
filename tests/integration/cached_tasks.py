"""Tasks with Prefect 1's cache options, for test_caching: each appends a line to the
file it is given, so that a test counts the runs that really happened."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from balancer import task
from balancer.cache_policies import FLOW_PARAMETERS, INPUTS, RUN_ID, TASK_SOURCE
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


# Prefect 2/3's key functions and policies (balancer/cache_policies.py): the worker
# works their keys out (worker/cachekeys.py).
def url_key(context: Any, parameters: dict[str, Any]) -> str | None:
    """Keyed by the url alone; "nocache" caches nothing; "boom" breaks the key."""
    if parameters["url"] == "boom":
        raise RuntimeError("no key for boom")
    if parameters["url"] == "nocache":
        return None
    return f"{context.task.name}:{parameters['url']}"


@task(cache_key_fn=url_key, cache_expiration=timedelta(hours=1))
def fetch_by_url(log: str, url: str, attempt: int = 0) -> str:
    _ran(log, f"fetch {url} {attempt}")
    return f"page of {url}"


@task(cache_policy=INPUTS + RUN_ID - "log")
def within_run(log: str, x: int) -> int:
    _ran(log, f"within_run {x}")
    return x * 3


@task(cache_policy=FLOW_PARAMETERS + TASK_SOURCE, refresh_cache=False)
def by_parameters(log: str) -> str:
    _ran(log, "by_parameters")
    return "made"


@task(target="{task_name}/{region}/{day}-{today}", checkpoint=True, result=object())
def loads_day(log: str, day: str) -> str:
    """Prefect 1's result target: a flow parameter (region), the context (task_name,
    today) and an input (day) name where its result is kept."""
    _ran(log, f"load {day}")
    return f"rows of {day}"
