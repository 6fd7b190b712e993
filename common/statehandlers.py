"""Prefect 1's state handlers: ``state_handlers=[fn, ...]`` and ``on_failure=fn`` on a task
or a flow.

Each handler is called as ``fn(obj, old_state, new_state)`` at every change of the run's
state (``obj``: the task or the flow; states: common/runsignals.py), in order, and what it
returns, if not None, is the new state the next one gets and the run goes on with.
``on_failure`` is ``fn(obj, state)``, called once the run is Failed. Where they run: a
task's on the worker that runs it, in the same process (they are code of the task's
module, which the worker imported: nothing about them travels through Redis); a flow's
in the process that waits for it, ``flow.run()``.

As in Prefect 1, a handler that raises fails the run: ``HandlerFailed`` says which and
why, and the error is not retried.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from balancer.common.runsignals import State

Handler = Callable[[Any, State, State], "State | None"]


class HandlerFailed(Exception):
    """A state handler raised: the run fails with this, never retried."""


def check(owner: str, state_handlers: Any, on_failure: Any) -> list[Handler]:
    """The handlers of ``owner`` (a task or a flow, named for the error), checked at
    decoration: a sequence of callables, and a callable ``on_failure``."""
    if state_handlers is None:
        handlers: list[Handler] = []
    elif isinstance(state_handlers, (str, bytes)) or not isinstance(state_handlers, Sequence):
        raise TypeError(f"{owner}: state_handlers must be a list of functions"
                        f" fn(obj, old_state, new_state), got {type(state_handlers).__name__}")
    else:
        handlers = list(state_handlers)
    for h in handlers:
        if not callable(h):
            raise TypeError(f"{owner}: state_handlers holds {h!r}, which is not callable")
    if on_failure is not None and not callable(on_failure):
        raise TypeError(f"{owner}: on_failure must be a function fn(obj, state), got"
                        f" {type(on_failure).__name__}")
    return handlers


def of(obj: Any) -> list[Handler]:
    """Every handler ``obj`` (a task, a task class or a flow) has, ``on_failure`` last."""
    handlers: list[Handler] = list(getattr(obj, "state_handlers", None) or ())
    on_failure = getattr(obj, "on_failure", None)
    if on_failure is not None:
        def failed(target: Any, old: State, new: State) -> State:
            if new.is_failed():
                on_failure(target, new)
            return new

        handlers.append(failed)
    return handlers


def call(obj: Any, handlers: Sequence[Handler], old: State, new: State) -> State:
    """``new`` as the handlers leave it; HandlerFailed if one raises (or returns something
    that is not a state)."""
    for handler in handlers:
        try:
            returned = handler(obj, old, new)
        except Exception as exc:
            raise HandlerFailed(f"state handler {_name(handler)} raised on {type(old).__name__}"
                                f" -> {type(new).__name__}: {type(exc).__name__}: {exc}"
                                ) from exc
        if returned is None:
            continue
        if not isinstance(returned, State):
            raise HandlerFailed(f"state handler {_name(handler)} returned {returned!r}, not a"
                                " state (return None, or a state of balancer.engine.state)")
        new = returned
    return new


def _name(handler: Handler) -> str:
    return getattr(handler, "__qualname__", None) or repr(handler)
