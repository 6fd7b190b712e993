"""Prefect 1's ``log_stdout=True``: what a task prints goes to its logger, a line at a time,
so it reaches the worker's log with the task's ids instead of a bare line on stdout.

``sys.stdout`` is one object for the whole process, and a thread-pool worker runs several
tasks at once: redirecting it for one task would take every other slot's prints too. So
the first task that asks puts a proxy in its place, once, which writes each piece of text
to the capture of the task run it is written from (a context variable: each slot's
thread, each async task, has its own), and to the real stdout when there is none. Tasks
that do not ask pay nothing; prints outside a capturing task go where they always went.
"""

from __future__ import annotations

import contextvars
import logging
import sys
import threading
from typing import Any

_capture: contextvars.ContextVar[Lines | None] = contextvars.ContextVar(
    "balancer_task_stdout", default=None)
_install = threading.Lock()
# Text printed without a newline is held until one comes, up to this many characters: a
# task printing a progress bar with "\r" for an hour must not grow its worker's memory.
MAX_LINE = 64 * 1024


class Lines:
    """One task run's capture: complete lines go to ``logger`` at INFO as they come; the
    rest of a line when the run ends (``close``)."""

    def __init__(self, logger: logging.Logger | logging.LoggerAdapter) -> None:  # type: ignore[type-arg]
        self.logger = logger
        self.partial = ""
        self.token: contextvars.Token[Lines | None] | None = None

    def write(self, text: str) -> int:
        *lines, self.partial = (self.partial + text).split("\n")
        if len(self.partial) > MAX_LINE:  # no newline for long: log it as it stands
            lines.append(self.partial)
            self.partial = ""
        for line in lines:
            if line.strip():
                self.logger.info("%s", line.rstrip())
        return len(text)

    def close(self) -> None:
        """The run ended: log what is left of its last line, and stop capturing."""
        if self.partial.strip():
            self.logger.info("%s", self.partial.rstrip())
        self.partial = ""
        if self.token is not None:
            _capture.reset(self.token)
            self.token = None


class _Stdout:
    """Stands in for ``sys.stdout``: a capturing task run's text goes to its Lines, any
    other to the stream it replaced (which answers everything else: fileno, encoding...)."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, text: str) -> int:
        lines = _capture.get()
        if lines is not None:
            return lines.write(text)
        return len(text) if self._real is None else int(self._real.write(text))

    def flush(self) -> None:
        if _capture.get() is None and self._real is not None:
            self._real.flush()

    def __getattr__(self, name: str) -> Any:
        if name == "_real":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._real, name)


def capture(logger: logging.Logger | logging.LoggerAdapter) -> Lines:  # type: ignore[type-arg]
    """From now on, in this context, text printed to stdout goes to ``logger``, a line at
    a time, until the returned capture is closed."""
    with _install:
        if not isinstance(sys.stdout, _Stdout):
            sys.stdout = _Stdout(sys.stdout)
    lines = Lines(logger)
    lines.token = _capture.set(lines)
    return lines
