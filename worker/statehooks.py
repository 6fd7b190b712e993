"""A task's state handlers (common/statehandlers.py) around one run, where it runs.

A run with handlers goes Pending (Retrying on a run after a failure) -> Running, then to
how it ended: Success (its value as ``result``), Skipped, Retrying (it failed and will
run again: retries are left, or it raised RETRY), Failed (TimedOut past its timeout),
with the error as ``result`` (an ``ErrorInfo``: the exception object is the worker's).
Whether a failure is retried is Redis's rule (fail.lua), read off the task's record at
the run's start, with its run count (``balancer.context``'s facts: one round trip, for
tasks with handlers only).

A handler's answer is the run's: a state it returns ends the run so (a Failed one fails
it for good, a Skipped one skips it, a Retrying one runs it again, a Success one
completes it, with the state's ``result`` as the value when it has one); a state other
than Running returned at the start ends the run without calling the task. A handler that
raises fails the run for good (``balancer.HandlerFailed``).

A run killed past its timeout in the process pool cannot call them where it ran: the
supervisor has a process of the pool ask its retry condition, if a retry is left
(worker.askretry), then tells the child that replaces the killed one (``Killed``), which
calls them, Running -> TimedOut (or Retrying), on a thread of its own; their answer
changes nothing (the run is over). A thread-pool run the worker gave up on ends TimedOut
(or Retrying, as the slot's thread settled it: ``Verdict``) past its timeout, Cancelled
when its run was cancelled. A process-pool run whose process died of its own (a
crash) is told the same way: Running -> Retrying while it is put back, Failed once
quarantined. A run completed from its cache goes Pending -> Cached (``cached``). What no
handler sees: a run lost with its whole worker (a thread pool's process, or the
supervisor: the dispatcher puts its tasks back), and a task refused before it could run
(not allowed, a bad signature).
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NamedTuple

from balancer.common import codec, importpath
from balancer.common.codec import ErrorInfo
from balancer.common.retry import persist
from balancer.common.runsignals import (
    Cached,
    Cancelled,
    Failed,
    Pending,
    Retrying,
    Running,
    Skipped,
    State,
    Success,
    TimedOut,
)
from balancer.common.signals import Lease
from balancer.common.statehandlers import HandlerFailed, RunInfo, call
from balancer.worker.interrupt import shielded
from balancer.worker.outcome import Outcome, Ran

from balancer import runcontext

log = logging.getLogger("worker")

VERDICT_WAIT = 10.0  # seconds a given-up run's thread waits for its slot's retry verdict
_verdict: ContextVar[Verdict | None] = ContextVar("balancer_verdict", default=None)


def around(handled: tuple[Any, list[Any]], run: Callable[[], Ran],
           settle: Callable[[Ran], Outcome], fn_path: str = "",
           timeout: float | None = None) -> Outcome:
    """Run the task (``run``) between its handlers' calls, and report the outcome their
    answer makes (``settle``)."""
    target, handlers = handled
    current = runcontext.current()
    if current is not None:
        target = _named(target, current.task_name)
    if not handlers:  # a retry condition alone: the facts are read only if it is asked
        return settle(_retry_condition(target, run(), _facts))
    facts = _facts()
    old: State = Retrying("Retrying task run.") if facts["failures"] else Pending()
    try:
        started = _call(target, handlers, old, Running("Starting task run."))
    except HandlerFailed as exc:
        return _handler_failed(exc)
    if not started.is_running():
        return settle(ran_of(started, None))
    ran = _retry_condition(target, run(), lambda: facts)
    outcome = settle(ran)
    try:
        with shielded():  # the run is over: a thread pool's interrupt must not cut them
            final = (_given_up(ran, fn_path, timeout, facts)
                     or _state_of(ran, outcome, facts))
            answered = _call(target, handlers, started, final)
    except HandlerFailed as exc:
        return _handler_failed(exc)
    if answered is final:
        return outcome
    return settle(ran_of(answered, ran.value if ran.ok else None))


def timed_out(fn_path: str, outcome: Outcome) -> Outcome:
    """A thread-pool run the slot gave up past its timeout, as Prefect 3 treats a task's
    TimeoutError: its task's ``retry_condition_fn``, if it has one, is asked whether it
    runs again (a ``TimeoutError`` as the state's result), on the slot's thread (the
    run's own may be stuck in a call). Its handlers see the run end in its own thread.
    A killed process-pool run's is asked here too (``Killed.retry_wanted``)."""
    handled = importpath.handled(fn_path)
    error = codec.unpack_error(outcome.payload)
    if handled is None or error is None or not outcome.retryable:
        return outcome
    target = handled[0]
    current = runcontext.current()
    if current is not None:
        target = _named(target, current.task_name)
    ran = _retry_condition(target, Ran(False, TimeoutError(error.message), error), _facts)
    return outcome if ran.retryable else dataclasses.replace(outcome, retryable=False)


def _retry_condition(target: Any, ran: Ran, facts: Callable[[], dict[str, Any]]) -> Ran:
    """Prefect 3's ``retry_condition_fn(task, task_run, state)``, asked when the run failed
    and Redis would retry it: a false answer, or one it raises, fails the run for good.
    Its state's ``result(raise_on_failure=False)`` is the exception the task raised. Not
    asked in the thread of a run the slot gave up (``timed_out`` asked it there)."""
    condition = getattr(target, "retry_condition_fn", None)
    if (condition is None or ran.ok or not ran.retryable or ran.mode
            or (ran.error is not None and ran.error.type.endswith(".TaskInterrupted"))):
        return ran
    known = facts()
    if not _retry_left(known["failures"], known["retries"]):
        return ran  # no retry is left to refuse
    from balancer.futures import RaisedState

    current = runcontext.current()
    run_info = RunInfo(current.task_run_id, current.task_name, known["failures"] + 1,
                       current.flow_run_id) if current is not None else RunInfo("", "")
    base = RaisedState.of("failed", run_info.name, None, ran.error)
    state = RaisedState(base.state, base.name, base.type, base.message, None, ran.error,
                        base.label, ran.value if isinstance(ran.value, BaseException) else None)
    try:
        retry = bool(condition(target, run_info, state))
    except Exception:
        log.exception("task=%s: its retry_condition_fn raised; it is not retried",
                      run_info.id)
        retry = False
    return ran if retry else ran._replace(retryable=False)


def _named(target: Any, name: str) -> Any:
    """The task as its handlers see it: the module's own, or for a run of a copy made
    with other options (``with_options``: the lease carries its name), a copy of it under
    that name. A task class is given as itself."""
    if isinstance(target, type) or getattr(target, "name", name) == name:
        return target
    named = copy.copy(target)
    named.name = name
    return named


def _call(target: Any, handlers: list[Any], old: State, new: State) -> State:
    """``statehandlers.call``; a handler's sys.exit() or KeyboardInterrupt fails the run
    as its errors do: a handler cannot stop its worker, as its task cannot."""
    try:
        return call(target, handlers, old, new)
    except (SystemExit, KeyboardInterrupt) as exc:
        raise HandlerFailed(f"a state handler raised {type(exc).__name__} on"
                            f" {type(old).__name__} -> {type(new).__name__}") from exc


def _facts() -> dict[str, Any]:
    """The run's failures so far and retries, read as the upstream results are: again
    until Redis answers (a run never fails for a moment of Redis's). A record that cannot
    be read otherwise (a key of the wrong type) reads as no failures and no retries."""
    facts = runcontext.current()
    more: dict[str, Any] = {}
    if facts is not None:
        try:
            more = persist("read its runs so far", facts.task_run_id, facts.more)
        except Exception:
            more = {}
    return {"failures": more.get("failures", 0), "retries": more.get("retries", 0)}


def _retry_left(failures: int, retries: int) -> bool:
    """Whether a run failing now (after ``failures`` earlier ones) is run again: fail.lua's
    rule for a plain failure."""
    return failures + 1 <= retries


def _given_up(ran: Ran, fn_path: str, timeout: float | None,
              facts: dict[str, Any]) -> State | None:
    """The state of a thread-pool run the worker gave up on, which ends in the
    ``TaskInterrupted`` raised in its thread: past the slot's deadline (``Verdict``: only a
    thread-pool run with a timeout has one), the timeout the worker reports (TimedOut, or
    Retrying); else its run was cancelled. None for any other run."""
    if ran.ok or ran.error is None or not ran.error.type.endswith(".TaskInterrupted"):
        return None
    verdict = _verdict.get()
    if timeout is None or verdict is None or not verdict.past_deadline():
        return Cancelled("Its run was cancelled.")
    error = ErrorInfo("TimeoutError", f"task {fn_path} ran past its timeout of {timeout}s"
                                      " and was stopped")
    retried = _retry_left(facts["failures"], facts["retries"]) and verdict.retried()
    return (Retrying if retried else TimedOut)(str(error), error)


class Verdict:
    """Whether a thread-pool run given up past its timeout is retried, as the slot's thread
    settles it (``timed_out``, its retry condition asked there): the run's own thread waits
    for it before it tells the run's handlers Retrying or TimedOut. Without it they were
    told Retrying where the condition had refused the retry."""

    def __init__(self) -> None:
        self._settled = threading.Event()
        self._retried = True
        # When the slot gives the run up (time.monotonic()): its start plus its timeout,
        # or a looping run's last iteration's (worker/looping.py). None: not told.
        self.deadline: float | None = None

    def past_deadline(self) -> bool:
        """Whether the run was given up past its timeout, not cancelled before it."""
        return self.deadline is not None and time.monotonic() >= self.deadline

    def settle(self, retried: bool) -> None:
        self._retried = retried
        self._settled.set()

    def retried(self, wait: float = VERDICT_WAIT) -> bool:
        """The slot's answer; True (as fail.lua's rule alone says) if none came within
        ``wait`` seconds (a condition that hangs holds the slot, not the handlers)."""
        self._settled.wait(wait)
        return self._retried


def awaiting_verdict(verdict: Verdict) -> None:
    """Called inside the context a timed run's thread runs in: its given-up run takes
    ``verdict``'s answer."""
    _verdict.set(verdict)


def _state_of(ran: Ran, outcome: Outcome, facts: dict[str, Any]) -> State:
    """The state the run ended in, as the worker reports it (``outcome``)."""
    if outcome.ok:
        return Success("Task run succeeded.", ran.value)
    # A failure the function did not raise is the result's (not stored): the outcome's.
    error = (ran.error if not ran.ok and ran.error is not None
             else codec.unpack_error(outcome.payload) or ErrorInfo("balancer.Error", ""))
    if outcome.mode == "skip":
        return Skipped(error.message or "Task skipped.")
    again = outcome.mode == "again" or (
        outcome.retryable and not outcome.mode
        and _retry_left(facts["failures"], facts["retries"]))
    if again:
        return Retrying(str(error), error)
    kind = TimedOut if error.type in ("TimeoutError", "asyncio.TimeoutError") else Failed
    return kind(str(error), error)


def ran_of(state: State, value: Any) -> Ran:
    """How a run ends in ``state``: a handler's answer, or what the task returned
    (balancer/states.py)."""
    if isinstance(state, Skipped):
        return Ran(False, error=ErrorInfo("balancer.SKIP", state.message), retryable=True,
                   mode="skip")
    if isinstance(state, Success):
        return Ran(True, state.result if state.result is not None else value)
    if isinstance(state, Retrying):
        return Ran(False, error=_error(state, "balancer.RETRY"), mode="again")
    return Ran(False, error=_error(state, "balancer.FAIL"), retryable=False, mode="final")


def _error(state: State, kind: str) -> ErrorInfo:
    if isinstance(state.result, ErrorInfo):
        return state.result
    return ErrorInfo(kind, state.message or f"the run was ended {type(state).__name__}")


def _handler_failed(exc: HandlerFailed) -> Outcome:
    return Outcome.failure(ErrorInfo("balancer.HandlerFailed", str(exc)), retryable=False)


# How a crashed run ends (``Killed.crash``): put back in its queue, or quarantined.
PUT_BACK = "back"
QUARANTINED = "quarantined"


class Killed(NamedTuple):
    """A run whose process ended under it, as the supervisor tells the next child: killed
    past its timeout, or dead of its own (``crash``: a segfault, the kernel's OOM killer,
    ``os._exit``), whose run fail.lua puts back in its queue or, at the poison threshold,
    quarantines."""

    task_id: str
    fn: str
    name: str
    flow: str
    queue: str
    message: str
    failures: int  # before this run
    retries: int
    refused: bool = False  # its retry condition said no (``retry_wanted``)
    crash: str = ""  # a crash: PUT_BACK or QUARANTINED; "" for a timeout
    lost: int = 0  # the task's crashes before this run

    @classmethod
    def of(cls, lease: Lease, error: ErrorInfo, failures: int, retries: int) -> Killed:
        return cls(lease.task_id, lease.fn, lease.name, lease.flow, lease.queue, error.message,
                   failures, retries)

    def retry_left(self) -> bool:
        return not self.refused and _retry_left(self.failures, self.retries)

    def retry_wanted(self, worker_id: str) -> bool:
        """Prefect 3's ``retry_condition_fn``, asked of this run as of a thread-pool run
        past its timeout (``timed_out``), by a process of the pool (worker.askretry): its
        task loaded under the worker's rules, the run's facts bound. True when it has no
        condition, or cannot be loaded (the run was retried so before)."""
        try:
            importpath.load(self.fn)
        except Exception:  # refused or broken now: the run settles as it would have
            return True
        with runcontext.bound(self._facts(worker_id)):
            return timed_out(self.fn, Outcome.failure(
                ErrorInfo("TimeoutError", self.message))).retryable

    def tell_handlers(self, worker_id: str) -> None:
        """Call the task's handlers; errors are logged. A timeout: Running -> TimedOut, or
        Retrying when a retry is left (the timeout is a failure like any: fail.lua's rule)
        and its retry condition did not refuse it. A crash: Running -> Retrying while it
        is put back (a crash uses no retry), Failed once quarantined (``on_failure`` is
        called then: the run failed for good)."""
        if self.crash:
            error = ErrorInfo("balancer.WorkerProcessDied", self.message)
            kind: type[State] = Failed if self.crash == QUARANTINED else Retrying
        else:
            error = ErrorInfo("TimeoutError", self.message)
            kind = Retrying if self.retry_left() else TimedOut
        with runcontext.bound(self._facts(worker_id)):
            _tell(self.fn, self.task_id, self.name, Running("Starting task run."),
                  lambda: kind(str(error), error))

    def _facts(self, worker_id: str) -> runcontext.RunFacts:
        return runcontext.RunFacts(
            self.task_id, self.name, self.flow, self.queue, worker_id,
            lambda: {"failures": self.failures, "retries": self.retries,
                     "task_run_count": self.failures + self.lost + 1})


def cached(fn_path: str, value: bytes) -> None:
    """Tell a task's handlers that its run completed from its cache, without running:
    Pending -> Cached, as Prefect 1's (their answer changes nothing; errors are logged)."""
    current = runcontext.current()
    _tell(fn_path, current.task_run_id if current is not None else fn_path,
          current.task_name if current is not None else "", Pending(),
          lambda: Cached("Task result found in its cache.", codec.unpack(value)))


def _tell(fn_path: str, task_id: str, name: str, old: State,
          new: Callable[[], State]) -> None:
    """Tell the handlers of the task at ``fn_path``, if it has any, of a change of state
    its run did not go through where it ran (their answer changes nothing; errors are
    logged). ``new`` is made only for a task with handlers."""
    try:
        importpath.load(fn_path)
    except Exception:
        return  # not a task this process may run: it has no handlers to call here
    handled = importpath.handled(fn_path)
    if handled is None:
        return
    target, handlers = handled
    try:
        _call(_named(target, name) if name else target, handlers, old, new())
    except (HandlerFailed, codec.CodecError) as exc:
        log.error("task=%s name=%s: a state handler failed: %s", task_id, name, exc)
