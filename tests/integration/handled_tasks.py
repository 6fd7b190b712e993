"""Tasks with Prefect 1's state handlers for tests/integration/test_state_handlers.py:
each handler appends a line to the file $HANDLED_LOG, written by whichever process runs it
(a worker's pool child)."""

from __future__ import annotations

import os
from typing import Any

from balancer import task


def _write(line: str) -> None:
    with open(os.environ["HANDLED_LOG"], "a") as out:
        out.write(f"{line} pid={os.getpid()}\n")


def note(obj: Any, old: Any, new: Any) -> None:
    result = new.result  # a failed run's is its error (an ErrorInfo)
    shown = f"{result.type}: {result.message}" if hasattr(result, "traceback") else repr(result)
    _write(f"{obj.name} {type(old).__name__} -> {type(new).__name__} {shown}")


def alert(obj: Any, state: Any) -> None:
    _write(f"on_failure {obj.name} {type(state).__name__} {state.message}")


@task(retries=1, retry_delay=0.05, state_handlers=[note], on_failure=alert)
def flaky(x: int) -> int:
    raise ValueError(f"no luck with {x}")


@task(state_handlers=[note], on_failure=alert)
def triple(x: int) -> int:
    return 3 * x
