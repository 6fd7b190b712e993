"""Which flow, if any, a ``with Flow(...)`` block is building on this thread."""

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
