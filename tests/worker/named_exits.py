"""A task whose task_run_name function calls sys.exit(), for tests/worker/test_executor.py."""

from __future__ import annotations

import sys

from balancer import task


def _exit() -> str:
    sys.exit(3)


@task(task_run_name=_exit)
def exits(x: int) -> int:
    return x
