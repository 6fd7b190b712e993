"""Tasks with Prefect 1's state handlers, for tests/worker/test_statehooks.py: each
handler notes what it was given in SEEN (the tests run them in their own process)."""

from __future__ import annotations

import time
from typing import Any

from balancer.common.runsignals import FAIL, LOOP, Failed, Skipped, State, Success

from balancer import task

SEEN: list[tuple[str, str, str, Any]] = []
FAILURES: list[State] = []


def note(obj: Any, old: State, new: State) -> None:
    SEEN.append((obj.name, type(old).__name__, type(new).__name__, new.result))


def skip_at_start(obj: Any, old: State, new: State) -> State | None:
    return Skipped("not today") if new.is_running() else None


def fail_success(obj: Any, old: State, new: State) -> State | None:
    return Failed("refused by its handler") if new.is_successful() else None


def rescue(obj: Any, old: State, new: State) -> State | None:
    return Success("rescued", 5) if new.is_failed() else None


def broken(obj: Any, old: State, new: State) -> None:
    raise RuntimeError("the handler is broken")


def not_a_state(obj: Any, old: State, new: State) -> Any:
    return "done"


CALLS: list[str] = []


@task(state_handlers=[note], on_failure=lambda t, s: FAILURES.append(s))
def doubles(x: int) -> int:
    CALLS.append("doubles")
    return 2 * x


@task(retries=2, state_handlers=[note], on_failure=lambda t, s: FAILURES.append(s))
def fails(x: int) -> int:
    raise ValueError(f"bad {x}")


@task(retries=2, state_handlers=[note])
def gives_up() -> None:
    raise FAIL("for good")


@task(state_handlers=[note])
def too_slow() -> None:
    raise TimeoutError("took too long")


@task(state_handlers=[skip_at_start, note])
def skipped_by_handler() -> None:
    CALLS.append("skipped_by_handler")


@task(state_handlers=[fail_success, note])
def failed_by_handler() -> int:
    return 1


@task(state_handlers=[rescue, note])
def rescued() -> int:
    raise ValueError("oops")


@task(state_handlers=[broken])
def handler_raises() -> None:
    CALLS.append("handler_raises")


@task(state_handlers=[not_a_state])
def handler_returns_junk() -> int:
    return 1


def exits(obj: Any, old: State, new: State) -> None:
    raise SystemExit(3)


@task(state_handlers=[exits])
def handler_exits() -> None:
    CALLS.append("handler_exits")


HOOKED: list[tuple[str, str, str, int, Any]] = []


def hook(obj: Any, run: Any, state: Any) -> None:
    HOOKED.append((obj.name, run.id, state.name, run.run_count,
                   state.result(raise_on_failure=False)))


def hook_raises(obj: Any, run: Any, state: Any) -> None:
    raise RuntimeError("the hook is broken")


@task(retries=1, on_completion=[hook_raises, hook], on_failure=[hook])
def hooked(x: int) -> int:
    if x < 0:
        raise ValueError("negative")
    return x + 1


ASKED: list[tuple[str, int, str]] = []


def only_connection_errors(obj: Any, run: Any, state: Any) -> bool:
    raised = state.result(raise_on_failure=False)
    ASKED.append((obj.name, run.run_count, type(raised).__name__))
    return isinstance(raised, ConnectionError)


@task(retries=3, retry_condition_fn=only_connection_errors)
def picky(kind: str) -> None:
    raise {"connection": ConnectionError, "value": ValueError}[kind](kind)


def only_timeouts(obj: Any, run: Any, state: Any) -> bool:
    raised = state.result(raise_on_failure=False)
    ASKED.append((obj.name, run.run_count, type(raised).__name__))
    return isinstance(raised, TimeoutError)


def _spin() -> None:
    while True:  # in Python: the thread pool's interrupt lands at once
        time.sleep(0.01)


@task(retries=3, retry_condition_fn=only_connection_errors, state_handlers=[note])
def overruns_refused() -> None:
    _spin()


@task(retries=3, retry_condition_fn=only_timeouts, state_handlers=[note])
def overruns_kept() -> None:
    _spin()


def condition_raises(obj: Any, run: Any, state: Any) -> bool:
    raise RuntimeError("broken condition")


@task(retries=3, retry_condition_fn=condition_raises)
def badly_picky() -> None:
    raise ValueError("x")


@task(timeout=0.3, state_handlers=[note])
def loops_slowly() -> None:
    """Loops for good, each iteration well within its timeout (Prefect 1's LOOP)."""
    time.sleep(0.15)
    raise LOOP("again")
