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

Prefect 2/3's hooks ride on the same calls: ``on_completion=[fn, ...]`` and
``on_failure=[fn, ...]`` (a list: a single function is Prefect 1's ``on_failure``), each
``fn(task, task_run, state)`` once the run completed, or failed for good, with Prefect
2/3's state (``balancer.futures.State``: ``.name``, ``.type``, ``.message``,
``.result()``) and the run's ids (``RunInfo``). As in Prefect, a hook that raises is
logged and changes nothing. A @flow function's hooks (balancer/flowfn.py) use ``hooks``
below.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from balancer.common.runsignals import State

Handler = Callable[[Any, State, State], "State | None"]

log = logging.getLogger("balancer")


class HandlerFailed(Exception):
    """A state handler raised: the run fails with this, never retried."""


def check(owner: str, state_handlers: Any, on_failure: Any,
          on_completion: Any = None) -> list[Handler]:
    """The handlers of ``owner`` (a task or a flow, named for the error), checked at
    decoration: a list of functions; ``on_failure`` one function (Prefect 1) or a list of
    them (Prefect 2/3's hooks, as ``on_completion``)."""
    handlers: list[Handler] = functions(owner, "state_handlers", state_handlers,
                                        "fn(obj, old_state, new_state)")
    if on_failure is not None and not callable(on_failure):
        if isinstance(on_failure, (str, bytes)) or not isinstance(on_failure, Sequence):
            raise TypeError(f"{owner}: on_failure must be a function fn(obj, state) (Prefect"
                            " 1) or a list of hooks fn(obj, run, state) (Prefect 2/3), got"
                            f" {type(on_failure).__name__}")
        functions(owner, "on_failure", on_failure, "fn(obj, run, state)")
    functions(owner, "on_completion", on_completion, "fn(obj, run, state)")
    return handlers


def functions(owner: str, name: str, given: Any, shape: str) -> list[Any]:
    """``given`` as a list of functions (None: none), else TypeError naming ``name``."""
    if given is None:
        return []
    if isinstance(given, (str, bytes)) or not isinstance(given, Sequence):
        raise TypeError(f"{owner}: {name} must be a list of functions {shape}, got"
                        f" {type(given).__name__}")
    for fn in given:
        if not callable(fn):
            raise TypeError(f"{owner}: {name} holds {fn!r}, which is not callable")
    return list(given)


def of(obj: Any) -> list[Handler]:
    """Every handler ``obj`` (a task, a task class or a flow) has: its state handlers,
    then its ``on_failure`` (Prefect 1's), then its Prefect 2/3 hooks as handlers."""
    handlers: list[Handler] = list(getattr(obj, "state_handlers", None) or ())
    on_failure = getattr(obj, "on_failure", None)
    if callable(on_failure):
        def failed(target: Any, old: State, new: State) -> State:
            if new.is_failed():
                on_failure(target, new)
            return new

        handlers.append(failed)
    elif on_failure:
        handlers.append(_hooks_handler("failed", list(on_failure)))
    on_completion = getattr(obj, "on_completion", None)
    if on_completion:
        handlers.append(_hooks_handler("completed", list(on_completion)))
    return handlers


@dataclass(frozen=True)
class RunInfo:
    """What a hook is given of the run, as Prefect 2/3's ``task_run`` or ``flow_run``:
    its id, its name (the task's or flow's: a run here has no name of its own), how many
    times it ran, and its flow run's id."""

    id: str
    name: str
    run_count: int = 1
    flow_run_id: str = ""


def hooks(obj: Any, hook_list: Sequence[Any], run: RunInfo, state: Any) -> None:
    """Call Prefect 2/3 hooks ``fn(obj, run, state)``; one that raises is logged, and the
    others are still called."""
    for hook in hook_list:
        try:
            hook(obj, run, state)
        except Exception:
            log.exception("%s %s: hook %s raised (the run's state stands)", run.name, run.id,
                          _name(hook))


def _hooks_handler(kind: str, hook_list: list[Any]) -> Handler:
    """A task's Prefect 2/3 hooks of ``kind`` ("completed", "failed") as a state handler:
    called once the run ends so (a retried failure is not one), answering nothing."""
    def handler(target: Any, old: State, new: State) -> None:
        ended = ("completed" if new.is_successful() and not new.is_skipped() else
                 "failed" if new.is_failed() else None)
        if ended != kind:
            return
        from balancer import runcontext
        from balancer.futures import State as Prefect2State

        context = runcontext.context
        run = RunInfo(context.task_run_id or "", context.task_name or "",
                      context.task_run_count or 1, context.flow_run_id or "")
        error = new.result if kind == "failed" and hasattr(new.result, "traceback") else None
        state = Prefect2State.of(kind, run.name, new.result if error is None else None, error)
        hooks(target, hook_list, run, state)

    return handler


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
