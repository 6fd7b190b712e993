"""Flows served as deployments, for test_deployments, as a user's script serves them:

    python -m tests.integration.deployed_flows NAME INTERVAL [LIMIT]

serves ``etl`` (``slow`` for a NAME starting with "slow") as the deployment
``<flow>/NAME``, every INTERVAL seconds (0: on request only), at most LIMIT runs at once.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from balancer import flow, runtime, task


@task
def double(x: int) -> int:
    return 2 * x


@task
def nap(log: str, seconds: float) -> None:
    with Path(log).open("a") as f:
        f.write(f"start {time.time()}\n")
    time.sleep(seconds)
    with Path(log).open("a") as f:
        f.write(f"end {time.time()}\n")


@task
def deployed_as() -> list[str | None]:
    return [runtime.deployment.id, runtime.deployment.name]


@task
def both(in_flow: list[str | None], in_task: list[str | None]) -> list[list[str | None]]:
    return [in_flow, in_task]


@flow
def etl(n: int = 1) -> int:
    both([runtime.deployment.id, runtime.deployment.name], deployed_as())
    return double(n)


@flow
def slow(log: str, seconds: float = 0.5) -> None:
    nap(log, seconds)


def main() -> None:
    name, interval, *rest = sys.argv[1:]
    limit = int(rest[0]) if rest else None
    every = float(interval) or None
    if name.startswith("slow"):
        slow.serve(name=name, interval=every, limit=limit,
                   parameters={"log": os.environ["TEST_LOG"]})
    else:
        etl.serve(name=name, interval=every, limit=limit, parameters={"n": 5})


if __name__ == "__main__":
    main()
