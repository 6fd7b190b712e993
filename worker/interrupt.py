"""Stopping a thread-pool task the worker gave up on (its timeout passed, or its run was
cancelled): ``TaskInterrupted`` is raised inside the task's thread, as Dramatiq's time
limit does.

Python cannot kill a thread, but CPython can raise an exception in one
(``PyThreadState_SetAsyncExc``): the thread meets it at its next Python instruction, so
a loop in Python stops, its ``finally`` blocks and context managers run, and the thread
ends. A thread inside a call that does not return to Python (a C loop, a read from a
socket without a timeout) meets it only when the call returns: until then it is a
*straggler*, interrupted again every second (a task that swallowed the exception in an
``except BaseException`` meets it again) and logged once it ends. Left alone, every
timeout and every cancel of a task spinning in Python would keep a thread running for
good, each one taking CPU from the worker's other slots.

The exception is raised only while the thread runs a task (``running``), and one not
landed yet when the task returns is withdrawn, so that it does not land in the worker's
code behind the task. CPython checks for it after any call, so it may still land as the
task returns, before the withdrawal: whoever runs a task under ``running`` treats a
``TaskInterrupted`` from that block as the task's own.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from balancer.common.asyncraise import raise_in

log = logging.getLogger("worker")

AGAIN = 1.0  # seconds between interrupts of a straggler


class TaskInterrupted(BaseException):
    """Raised in a thread-pool task's thread once the worker gave the task up. A
    BaseException, as KeyboardInterrupt is: ``except Exception`` in the task does not
    swallow it."""


_lock = threading.Lock()
# The threads inside a task's own code, by ident (an ident is reused once its thread
# ended: the thread itself is compared too).
_running: dict[int, threading.Thread] = {}
_sent: set[int] = set()  # of those, the ones with an interrupt that may not have landed


class running:  # lower case: used as a function, ``with running():``
    """Around a task's run on this thread: while inside, ``interrupt`` may stop it."""

    def __enter__(self) -> None:
        with _lock:
            _running[threading.get_ident()] = threading.current_thread()

    def __exit__(self, *exc: object) -> None:
        ident = threading.get_ident()
        with _lock:
            _running.pop(ident, None)
            if ident in _sent:
                _sent.discard(ident)
                raise_in(ident, None)


class shielded:  # lower case, as ``running``
    """Around the worker's own calls inside ``running`` once the task's code has ended (its
    state handlers, told how it ended): no interrupt lands there, and one sent that has
    not landed is withdrawn. Without it, a slow handler of a run stopped past its timeout
    (a webhook) would be cut off by the straggler watch's next interrupt."""

    def __enter__(self) -> None:
        ident = threading.get_ident()
        with _lock:
            self._thread = _running.pop(ident, None)
            if ident in _sent:
                _sent.discard(ident)
                raise_in(ident, None)

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            with _lock:
                _running[threading.get_ident()] = self._thread


def _in_task(thread: threading.Thread) -> bool:
    """Whether ``thread`` runs a task's own code (``running``, not ``shielded``)."""
    with _lock:
        return thread.ident is not None and _running.get(thread.ident) is thread


def interrupt(thread: threading.Thread) -> bool:
    """Raise ``TaskInterrupted`` in ``thread`` if it runs a task; whether it was sent."""
    ident = thread.ident
    with _lock:
        if ident is None or _running.get(ident) is not thread:
            return False
        if raise_in(ident, TaskInterrupted) != 1:
            return False
        _sent.add(ident)
        return True


@dataclass
class _Straggler:
    thread: threading.Thread
    task: str
    why: str
    since: float = field(default_factory=time.monotonic)


class Stragglers:
    """The task threads given up that still run: interrupted again every ``AGAIN``
    seconds, and logged when they end. One per worker process."""

    def __init__(self, again: float = AGAIN) -> None:
        self.again = again
        self._items: list[_Straggler] = []
        self._cond = threading.Condition()
        self._watcher: threading.Thread | None = None

    def stop(self, thread: threading.Thread, task: str, why: str, wait: float = 0.1) -> bool:
        """Interrupt ``thread``, which runs ``task`` (a name for the logs) given up for
        ``why``; whether its task's code ended within ``wait`` seconds (the thread may go
        on calling the run's state handlers, ``shielded``). One that did not is watched
        until it does."""
        interrupt(thread)
        thread.join(wait)
        if not thread.is_alive():
            return True
        if not _in_task(thread):
            log.info("task %s (%s) stopped; its thread calls the run's state handlers", task,
                     why)
            return True
        with self._cond:
            self._items.append(_Straggler(thread, task, why))
            alive = len(self._items)
            if self._watcher is None:
                self._watcher = threading.Thread(target=self._watch, name="stragglers",
                                                 daemon=True)
                self._watcher.start()
        log.warning("task %s (%s) does not stop: its thread is inside a call that does not"
                    " return to Python; interrupted again every %.0fs (%d such threads)",
                    task, why, self.again, alive)
        return False

    def alive(self) -> int:
        """How many given-up threads still run their task's code (not those that went on
        to its state handlers)."""
        with self._cond:
            return sum(1 for item in self._items if _in_task(item.thread))

    def _watch(self) -> None:
        while True:
            with self._cond:
                self._cond.wait(self.again)
                items = list(self._items)
            ended = []
            for item in items:
                if item.thread.is_alive():
                    interrupt(item.thread)
                else:
                    ended.append(item)
            if not ended:
                continue
            with self._cond:
                self._items = [i for i in self._items if i not in ended]
                left = len(self._items)
            for item in ended:
                log.info("task %s (%s) stopped at last, %.1fs later (%d threads still do"
                         " not stop)", item.task, item.why, time.monotonic() - item.since,
                         left)


stragglers = Stragglers()
