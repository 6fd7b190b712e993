"""A @flow function's ``timeout_seconds``, as Prefect 2/3's: past it, the function is
stopped where it is and its run fails with ``FlowRunTimeoutError`` (a ``TimeoutError``).
An ``async def`` function is cancelled instead, at its next ``await`` (``within``).

How it is stopped: in the main thread, by a SIGALRM timer, which interrupts a sleep, a
socket read or a lock wait at once; elsewhere (a flow called from another thread, or a
program with a timer of its own armed), by raising in the function's thread
(common/asyncraise.py), which lands at its next Python instruction, so a call that does
not return to Python (a long ``time.sleep`` in a thread) delays it until it returns.

What lands inside is ``_Expired``, a BaseException: the function's own ``except
Exception`` does not swallow it, and the flow's ``retries`` do not run it again. Past the
limit the caller gets ``FlowRunTimeoutError`` however the function ended, also when it
caught what landed.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from balancer.common.asyncraise import raise_in

T = TypeVar("T")


class FlowRunTimeoutError(TimeoutError):
    """A @flow function ran past its ``timeout_seconds`` (Prefect's name)."""


class _Expired(BaseException):
    """Raised inside the function once its time is up."""


@dataclass
class _Limit:
    active: bool = True
    expired: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


@contextlib.contextmanager
def limit(seconds: float | None, owner: str) -> Iterator[None]:
    """Around a flow function's run: raise FlowRunTimeoutError (naming ``owner``) once it
    has run ``seconds``; None sets no limit."""
    if seconds is None:
        yield
        return
    state = _Limit()
    stopper = _by_alarm if _alarm_free() else _by_thread
    message = _message(owner, seconds)
    try:
        with stopper(seconds, state):
            yield
    except (Exception, _Expired) as exc:
        if not state.expired:
            raise
        raise FlowRunTimeoutError(message) from exc  # its traceback: where it was stopped
    if state.expired:
        raise FlowRunTimeoutError(message)


async def within(work: Awaitable[T], seconds: float | None, owner: str) -> T:
    """An ``async def`` flow's limit: past ``seconds`` its work is cancelled (at its next
    ``await``) and FlowRunTimeoutError raised."""
    if seconds is None:
        return await work
    try:
        return await asyncio.wait_for(work, seconds)
    except asyncio.TimeoutError as exc:
        raise FlowRunTimeoutError(_message(owner, seconds)) from exc


def _message(owner: str, seconds: float) -> str:
    return f"{owner} exceeded its timeout of {seconds:g} second(s)"


def _alarm_free() -> bool:
    """Whether SIGALRM may be used: in the main thread, with no timer of another armed
    (a program's own, a test runner's, an outer flow's)."""
    return (hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0))


@contextlib.contextmanager
def _by_alarm(seconds: float, state: _Limit) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        if state.active:
            state.expired = True
            raise _Expired

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        state.active = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def _by_thread(seconds: float, state: _Limit) -> Iterator[None]:
    ident = threading.get_ident()

    def expire() -> None:
        with state.lock:
            if state.active:
                state.expired = True
                raise_in(ident, _Expired)

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with state.lock:
            state.active = False
            if state.expired:
                raise_in(ident, None)  # one that has not landed must not land later
        timer.cancel()
