"""Tasks that loop with Prefect 1's LOOP, for tests/integration/test_looping.py; each
notes its iterations in the file $LOOP_LOG (written by whichever process runs it)."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import balancer as prefect
from balancer import task
from balancer.engine.signals import LOOP


def _note(line: str) -> None:
    with open(os.environ["LOOP_LOG"], "a") as out:
        out.write(line + "\n")


@task
def largest_fibonacci_below(limit: int) -> int:
    """Prefect 1's own example: the loop's length is known only as it runs."""
    payload: dict[str, Any] = prefect.context.get("task_loop_result", {})
    n, fib, next_fib = payload.get("n", 1), payload.get("fib", 1), payload.get("next", 1)
    if next_fib > limit:
        return fib
    raise LOOP(message=f"fib {n}={next_fib}", result={"n": n + 1, "fib": next_fib,
                                                       "next": fib + next_fib})


@task(retries=1, retry_delay=0.05)
def pages(last: int, broken_at: int, marker: str, dies: bool = False) -> list[int]:
    """Gathers pages 1..last, one per iteration; at page ``broken_at``, once, it fails
    (or its process dies, as by the kernel's OOM killer): the run after goes on from
    there."""
    count = prefect.context.task_loop_count
    got: list[int] = prefect.context.get("task_loop_result", [])
    _note(f"page {count} after {got}")
    if count == broken_at and not os.path.exists(marker):
        open(marker, "w").close()
        if dies:
            os.kill(os.getpid(), signal.SIGKILL)
        raise ConnectionError(f"page {count} timed out")
    got = [*got, count]
    if count == last:
        return got
    raise LOOP(result=got)


@task(timeout=1.0, retries=0)
def polls(rounds: int, each: float) -> int:
    """Runs ``rounds`` iterations of ``each`` seconds: longer than its timeout in all,
    each one well within it."""
    count = prefect.context.task_loop_count
    time.sleep(each)
    if count == rounds:
        return count
    raise LOOP(f"round {count}")


@task(timeout=0.5, retries=0)
def stalls_in_round(rounds: int) -> int:
    """Its last iteration outlives the timeout: that iteration is stopped."""
    count = prefect.context.task_loop_count
    if count == rounds:
        time.sleep(30)
    raise LOOP(f"round {count}")

