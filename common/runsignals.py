"""Prefect 1's signals: exceptions a task raises to set how its run ends.

    raise SKIP("nothing new today")      # skipped: a success; dependents skip too, unless
                                         # they run on skips (skip_on_upstream_skip=False)
    raise FAIL("bad rows")               # failed at once, never retried
    raise RETRY("not ready yet")         # retried, even with no retries left or configured
    raise ENDRUN(Success("done early"))  # ends the run in that state: Success, Failed or
                                         # Skipped (a plain message: Failed)

They live in ``common`` because the worker, which never imports ``balancer``'s client
side, recognises them (worker/executor.py); users import them from ``balancer`` or
``balancer.engine.signals``, where Prefect 1 code finds them.
"""

from __future__ import annotations

from typing import Any


class State:
    """A run's state, as Prefect 1's (``prefect.engine.state``): what ENDRUN ends a run in
    (``Success(message, result)``, ``Failed``, ``Skipped``), and what state handlers are
    given (common/statehandlers.py). ``mode`` is how a run ended in it settles (the
    worker's outcome: "success", "final", "skip", "again"; "" for a state no run ends in).
    The classes nest as Prefect 1's do, so that its handlers' checks read the same:
    Retrying is a Scheduled is a Pending; Skipped is a Success, TimedOut a Failed, and
    every one of those a Finished."""

    mode = ""

    def __init__(self, message: str | None = None, result: Any = None) -> None:
        self.message = message or ""
        self.result = result

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def is_pending(self) -> bool:
        return isinstance(self, Pending)

    def is_scheduled(self) -> bool:
        return isinstance(self, Scheduled)

    def is_retrying(self) -> bool:
        return isinstance(self, Retrying)

    def is_running(self) -> bool:
        return isinstance(self, Running)

    def is_finished(self) -> bool:
        return isinstance(self, Finished)

    def is_successful(self) -> bool:
        return isinstance(self, Success)

    def is_failed(self) -> bool:
        return isinstance(self, Failed)

    def is_skipped(self) -> bool:
        return isinstance(self, Skipped)

    def is_cancelled(self) -> bool:
        return isinstance(self, Cancelled)


class Pending(State):
    pass


class Scheduled(Pending):
    pass


class Retrying(Scheduled):
    mode = "again"


class Running(State):
    pass


class Finished(State):
    pass


class Success(Finished):
    mode = "success"


class Failed(Finished):
    mode = "final"


class TimedOut(Failed):
    pass


class Skipped(Success):
    mode = "skip"


class Cached(Success):
    """Completed with a result an earlier run stored (``cache_for``), without running."""


class Cancelled(Finished):
    pass


class Looped(Finished):
    """An iteration of a looping run ended (``LOOP``): the task runs again at once, with
    its ``result`` as ``context.task_loop_result``."""

    def __init__(self, message: str | None = None, result: Any = None,
                 loop_count: int = 1) -> None:
        super().__init__(message, result)
        self.loop_count = loop_count


class PrefectStateSignal(Exception):
    """A signal: how the run ends is its ``mode`` ("skip", "final", "again", "success")."""

    mode = "final"

    def __init__(self, message: Any = None, *args: Any) -> None:
        super().__init__(message, *args)
        self.message = "" if message is None else str(message)

    def __str__(self) -> str:
        return self.message


class SKIP(PrefectStateSignal):
    """The task is skipped: a success whose result is None. Dependents are skipped too,
    unless they were made with ``skip_on_upstream_skip=False``."""

    mode = "skip"


class FAIL(PrefectStateSignal):
    """The task fails now, whatever retries it has left."""

    mode = "final"


class RETRY(PrefectStateSignal):
    """The task runs again after its retry delay, with or without retries configured
    (Prefect 1's RETRY puts it straight into Retrying)."""

    mode = "again"


class LOOP(PrefectStateSignal):
    """Run the task again at once, in the same run, with ``result`` (the signal itself
    when none is given, as Prefect 1's) as ``context.task_loop_result`` and
    ``context.task_loop_count`` one more: a loop whose length is known only as it runs
    (pages of an API, polling). Its progress is recorded on the task, so that a retry,
    or the run after a crash, goes on from the last iteration (worker/loopstate.py)."""

    mode = "loop"

    def __init__(self, message: Any = None, *args: Any, result: Any = None) -> None:
        super().__init__(message, *args)
        self.result = self if result is None else result
        self.state = Looped(self.message, self.result)


class ENDRUN(PrefectStateSignal):
    """Stop and end the run in ``state``: Success, Failed or Skipped, or Retrying (it runs
    again after its retry delay); any other state fails it."""

    def __init__(self, state: State | str | None = None) -> None:
        if isinstance(state, State):
            self.state = state
        else:
            self.state = Failed(state)
        super().__init__(self.state.message)
        self.mode = self.state.mode or "final"


__all__ = ["ENDRUN", "FAIL", "LOOP", "RETRY", "SKIP", "Cached", "Cancelled", "Failed",
           "Finished", "Looped", "Pending",
           "PrefectStateSignal", "Retrying", "Running", "Scheduled", "Skipped", "State",
           "Success", "TimedOut"]
