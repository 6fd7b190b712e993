"""Which flow, if any, a ``with Flow(...)`` block is building on this thread, and which
open run a @flow function adds its tasks to."""

from __future__ import annotations

import contextvars
from typing import Any

_current: contextvars.ContextVar[Any] = contextvars.ContextVar("balancer_flow", default=None)


def current_flow() -> Any:
    return _current.get()


def enter(flow: Any) -> contextvars.Token[Any]:
    return _current.set(flow)


def leave(token: contextvars.Token[Any]) -> None:
    _current.reset(token)


# The open run of the @flow function running on this thread (balancer/dynamic.py). A
# context variable: worker threads of the embedded cluster, started elsewhere, never see it.
_run: contextvars.ContextVar[Any] = contextvars.ContextVar("balancer_run", default=None)


def current_run() -> Any:
    return _run.get()


def enter_run(run: Any) -> contextvars.Token[Any]:
    return _run.set(run)


def leave_run(token: contextvars.Token[Any]) -> None:
    _run.reset(token)
