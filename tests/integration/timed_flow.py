"""A user's script: a @flow function with ``timeout_seconds`` that waits on a task running
longer than that, in its main thread (where the timeout is a SIGALRM timer). It prints
what the call gave as JSON, for tests/integration/test_flow_timeout.py.

    python -m tests.integration.timed_flow TIMEOUT TASK_SECONDS
"""

from __future__ import annotations

import json
import sys
from typing import Any

from balancer import flow
from tests.integration import tasks

attempts: list[int] = []
told: list[str] = []


def main() -> None:
    timeout, seconds = float(sys.argv[1]), float(sys.argv[2])

    @flow(timeout_seconds=timeout, retries=2,
          on_failure=[lambda flow, run, state: told.append(state.name)])
    def waits_on_a_long_task(seconds: float) -> Any:
        attempts.append(1)
        try:
            return tasks.sleep_for(seconds)
        except Exception:  # the function's own handler does not swallow its timeout
            return "swallowed"

    state = waits_on_a_long_task(seconds, return_state=True)
    error = state.result(raise_on_failure=False)
    print(json.dumps({"name": state.name, "type": state.type, "attempts": len(attempts),
                      "told": told, "run": state.flow_run_id,
                      "error": type(error).__name__, "timeout_error": isinstance(
                          error, TimeoutError), "message": state.message}))


if __name__ == "__main__":
    main()
