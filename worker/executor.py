"""Run one task function on decoded arguments and encode what came out.

This runs inside a pool thread or a pool child process, so it touches no Redis itself: it
takes bytes and returns bytes, and every failure becomes an error record instead of a
crash. (A task with a ``task_run_name`` has its run's name made here, from the arguments
it receives, and handed to the run's facts, which record it: balancer/runnames.py.)
That includes what a task raises that is not an ``Exception``: ``sys.exit()``, a
``KeyboardInterrupt`` or ``asyncio.CancelledError`` of its own, a ``BaseException``
subclass. Let through, it would end the slot's thread without a word (a thread-pool
worker then holds the task "running" for ever, one slot fewer) or the pool child (a crash,
counted toward quarantine). No signal can raise them here: SIGINT goes to a worker's main
thread, and a pool child ignores it.

An ``async def`` task runs to completion on the event loop of the thread running it (one
per slot: a thread-pool slot's thread, a process-pool child), with its timeout enforced by
cancelling it; a task never "returns a coroutine".
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import threading
from collections.abc import Awaitable
from typing import Any

from balancer.common import codec, importpath, taskstdout
from balancer.common.codec import CodecError, ErrorInfo
from balancer.common.importpath import RUN_NAME_KEYWORD, TaskNotAllowed, TaskNotFound, load
from balancer.common.runsignals import LOOP, PrefectStateSignal, State
from balancer.worker import looping, statehooks
from balancer.worker.outcome import Outcome, Ran

from balancer import runcontext, runnames

_local = threading.local()


def _loop() -> asyncio.AbstractEventLoop:
    """This thread's event loop, made on first use and kept: a slot runs every async
    task it gets on the same loop."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = _local.loop = asyncio.new_event_loop()
    return loop


def close_loop() -> None:
    """Close this thread's event loop, if it made one (a thread that ends)."""
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is not None and not loop.is_closed():
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def run_awaitable(awaitable: Awaitable[Any], timeout: float | None) -> Any:
    """Run a task's coroutine to its end on this thread's loop. Past ``timeout`` it is
    cancelled and TimeoutError raised, as for any task run past its timeout."""
    async def bounded() -> Any:
        try:
            return await asyncio.wait_for(awaitable, timeout)
        except asyncio.TimeoutError as exc:
            if not isinstance(exc.__cause__, asyncio.CancelledError):
                raise  # the task's own (a read that timed out), not its timeout
            # Named as a thread's or a process's timeout names it: the builtin
            # TimeoutError, which asyncio's is only from Python 3.11 on.
            raise TimeoutError(f"the task ran past its timeout of {timeout}s") from None

    return _loop().run_until_complete(bounded())


def execute(fn_path: str, args_blob: bytes, max_result_bytes: int,
            timeout: float | None = None) -> Outcome:
    try:
        fn = load(fn_path)
    except TaskNotAllowed as exc:
        return Outcome.failure(ErrorInfo("balancer.TaskNotAllowed", str(exc)), retryable=False)
    except TaskNotFound as exc:
        return Outcome.failure(ErrorInfo.from_exception(exc))
    try:
        args, kwargs = codec.decode_call(args_blob)
    except CodecError as exc:
        return Outcome.failure(ErrorInfo("balancer.BadPayload", f"task {fn_path}: {exc}"), False)

    travelled = kwargs.pop(RUN_NAME_KEYWORD, None)
    refused = begin_run(fn_path, fn, args, kwargs, travelled)
    if refused is not None:
        return refused
    handled = importpath.handled(fn_path)
    if handled is None:
        return _settle(fn_path, _call(fn_path, fn, args, kwargs, timeout), max_result_bytes)
    return statehooks.around(handled, lambda: _call(fn_path, fn, args, kwargs, timeout),
                             lambda ran: _settle(fn_path, ran, max_result_bytes), fn_path,
                             timeout)


def begin_run(fn_path: str, fn: Any, args: list[Any], kwargs: dict[str, Any],
              travelled: Any = None) -> Outcome | None:
    """Give the current run's facts its call (runtime.task_run.parameters) and, for a task
    with a ``task_run_name`` (the module's, or ``travelled`` with a copy's call), its name
    (balancer/runnames.py). The outcome of a name that cannot be made (the task's code: no
    retry can mend it), else None."""
    facts = runcontext.current()
    if facts is None:
        return None
    facts.call = (fn, args, kwargs)
    run_name = importpath.run_name(fn_path) if travelled is None else travelled
    if run_name is None:
        return None
    try:
        if travelled is not None:
            run_name = runnames.travelled(travelled)
        facts.named(runnames.render(f"task {fn_path}", "task_run_name", run_name,
                                    runnames.parameters(fn, args, kwargs)))
    except runnames.RunNameError as exc:
        return Outcome.failure(ErrorInfo("balancer.RunNameError", str(exc)), False)
    except BaseException as exc:  # sys.exit() in a name function: as in _call
        return Outcome.failure(ErrorInfo(
            "balancer.RunNameError", f"task {fn_path}: its task_run_name function raised"
            f" {type(exc).__name__}: {exc}"), False)
    return None


def begin_cached_run(fn_path: str, args_blob: bytes) -> Outcome | None:
    """``begin_run`` for a run completed from its cache, which ``execute`` never sees. A
    task that cannot be loaded here, or arguments that cannot be read, leave it unnamed:
    its cached result stands, as it did before names."""
    try:
        fn = load(fn_path)  # its task_run_name is known once it is loaded
    except (TaskNotAllowed, TaskNotFound):
        return None
    if importpath.run_name(fn_path) is None and RUN_NAME_KEYWORD.encode() not in args_blob:
        return None
    try:
        args, kwargs = codec.decode_call(args_blob)
    except CodecError:
        return None
    return begin_run(fn_path, fn, args, kwargs, kwargs.pop(RUN_NAME_KEYWORD, None))


def _call(fn_path: str, fn: Any, args: list[Any], kwargs: dict[str, Any],
          timeout: float | None) -> Ran:
    printed = (taskstdout.capture(runcontext.context["logger"])
               if importpath.logs_stdout(fn_path) else None)
    try:
        while True:
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = run_awaitable(value, timeout)
                break
            except LOOP as signal:  # Prefect 1's: called again, the loop one further
                looping.next_iteration(signal)
    except PrefectStateSignal as signal:
        if signal.mode == "success":  # ENDRUN(Success(...)): completed, with its result
            return Ran(True, getattr(getattr(signal, "state", None), "result", None))
        return Ran(False, error=ErrorInfo.from_exception(signal),
                   retryable=signal.mode != "final", mode=signal.mode)
    except Exception as exc:  # kept in ``value`` for a retry condition to look at
        return Ran(False, exc, ErrorInfo.from_exception(exc))
    except BaseException as exc:  # sys.exit() and the like: the task fails, the slot goes on
        error = ErrorInfo.from_exception(exc)
        return Ran(False, error=dataclasses.replace(error, message=(
            f"{error.message} (raised by task {fn_path}: a task cannot stop its worker;"
            " it fails instead)").lstrip()))
    finally:
        if printed is not None:
            printed.close()
    if isinstance(value, State):  # Completed(...), Failed(...): the run ends in it
        return statehooks.ran_of(value, None)
    return Ran(True, value)


def _settle(fn_path: str, ran: Ran, max_result_bytes: int) -> Outcome:
    """The outcome a run reports: its value encoded (and checked), or its error."""
    if not ran.ok:
        assert ran.error is not None
        return Outcome(False, codec.pack_error(ran.error), ran.retryable, mode=ran.mode)
    value = ran.value
    try:
        blob = codec.pack(value)
    except CodecError as exc:
        return Outcome.failure(ErrorInfo(
            "balancer.ResultNotSerializable",
            f"task {fn_path} returned a value of type {type(value).__qualname__} that cannot be"
            f" stored: {exc}"
            " (results travel as msgpack)"), retryable=False)
    if len(blob) > max_result_bytes:
        return Outcome.failure(ErrorInfo(
            "balancer.ResultTooLarge",
            f"task {fn_path} returned {len(blob)} bytes, over the limit of {max_result_bytes}"
            " (BALANCER_MAX_PAYLOAD_BYTES, on the worker; store a large result elsewhere and"
            " return a reference to it)"), retryable=False)
    return Outcome(True, blob)
