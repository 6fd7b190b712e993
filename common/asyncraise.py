"""Raising an exception in another thread, for the two places that stop code they do not
own: a worker's thread-pool task past its timeout or cancelled (worker/interrupt.py), and
a @flow function past its ``timeout_seconds`` (balancer/flowtimeout.py).

CPython cannot kill a thread, but it can raise an exception in one
(``PyThreadState_SetAsyncExc``): the thread meets it at its next Python instruction. A
thread inside a call that does not return to Python (a C loop, a long ``time.sleep``)
meets it only when the call returns.
"""

from __future__ import annotations


def raise_in(ident: int, exc: type[BaseException] | None) -> int:
    """Raise ``exc`` in the thread ``ident`` at its next instruction; None withdraws one
    that has not landed yet. How many threads it reached (1, or 0 for a thread gone).
    ctypes is imported here, not at the top: a client imports this module and most never
    call it."""
    import ctypes

    return int(ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(ident), ctypes.py_object(exc) if exc is not None else None))
