"""Where a thread-pool slot runs its task: on the slot's thread, or on a thread of its
own when the task has a timeout, so that the slot can give up on it. A task given up (past
its timeout, or its run cancelled) is stopped by an exception raised in its thread
(``worker.interrupt``); one inside a call that does not return to Python runs on until
it does, and the slot goes on meanwhile. (A process-pool slot is a child process that
runs its tasks itself: ``worker.child``.)
"""

from __future__ import annotations

import contextvars
import threading
import time
from typing import Protocol

from balancer.common.codec import ErrorInfo
from balancer.worker import looping, statehooks
from balancer.worker.executor import close_loop, execute
from balancer.worker.interrupt import TaskInterrupted, running, stragglers
from balancer.worker.outcome import Outcome


def _timeout(fn_path: str, timeout: float, stopped: bool) -> Outcome:
    how = ("was stopped" if stopped else
           "was given up (its thread runs on inside a call that does not return to Python)")
    return Outcome.failure(ErrorInfo("TimeoutError", f"task {fn_path} ran past its timeout of"
                                                     f" {timeout}s and {how}"))


def _interrupted(fn_path: str) -> Outcome:
    return Outcome.failure(ErrorInfo("balancer.TaskInterrupted",
                                     f"task {fn_path} was stopped: the worker gave it up"))


class Runner(Protocol):
    def run(self, fn_path: str, args_blob: bytes, timeout: float | None) -> Outcome: ...

    def stop_task(self, why: str) -> None: ...

    def close(self, kill: bool = False) -> None: ...


class ThreadRunner:
    def __init__(self, max_result_bytes: int) -> None:
        self.max_result_bytes = max_result_bytes
        self._task: tuple[threading.Thread, str] | None = None  # the thread running a task

    def run(self, fn_path: str, args_blob: bytes, timeout: float | None) -> Outcome:
        if timeout is None:
            self._task = (threading.current_thread(), fn_path)
            try:
                with running():
                    return execute(fn_path, args_blob, self.max_result_bytes, timeout)
            except TaskInterrupted:  # landed as the task returned (worker.interrupt)
                return _interrupted(fn_path)
            finally:
                self._task = None
        box: list[Outcome] = []

        def run() -> None:
            try:
                with running():
                    box.append(execute(fn_path, args_blob, self.max_result_bytes, timeout))
            except TaskInterrupted:
                pass  # given up: nobody reads its outcome
            finally:
                close_loop()  # this thread ends: its event loop, if an async task made one

        # The task's thread sees this one's context variables: balancer.context's run.
        context = contextvars.copy_context()
        verdict = statehooks.Verdict()
        context.run(statehooks.awaiting_verdict, verdict)
        deadline = [time.monotonic() + timeout]
        verdict.deadline = deadline[0]

        def restart() -> None:  # a looping run's next iteration (worker/looping.py)
            deadline[0] = verdict.deadline = time.monotonic() + timeout

        context.run(looping.restarting, restart)
        thread = threading.Thread(target=context.run, args=(run,), name=f"task-{fn_path}",
                                  daemon=True)
        self._task = (thread, fn_path)
        try:
            thread.start()
            while True:
                thread.join(max(0.0, deadline[0] - time.monotonic()))
                if not thread.is_alive() or time.monotonic() >= deadline[0]:
                    break
            if thread.is_alive():
                stopped = stragglers.stop(thread, fn_path, f"past its timeout of {timeout}s")
                outcome = _timeout(fn_path, timeout, stopped)
                try:
                    outcome = statehooks.timed_out(fn_path, outcome)
                finally:  # the run's thread tells its handlers what was settled here
                    verdict.settle(outcome.retryable)
                return outcome
            return box[0] if box else _interrupted(fn_path)
        finally:
            self._task = None

    def stop_task(self, why: str) -> None:
        """The worker gave up the task this runner runs (its run was cancelled): stop it
        in its thread; one that does not stop is watched (``worker.interrupt``)."""
        task = self._task
        if task is not None:
            stragglers.stop(*task, why)

    def close(self, kill: bool = False) -> None:
        pass
