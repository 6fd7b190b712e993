"""Where a thread-pool slot runs its task: on the slot's thread, or on a thread of its
own when the task has a timeout, so that the slot can give up on it. A thread past its
timeout is abandoned (Python cannot kill a thread) and the task is failed. (A process-pool
slot is a child process that runs its tasks itself: ``worker.child``.)
"""

from __future__ import annotations

import contextvars
import logging
import threading
from typing import Protocol

from balancer.common.codec import ErrorInfo
from balancer.worker.executor import Outcome, close_loop, execute

log = logging.getLogger("worker")


def _timeout(fn_path: str, timeout: float) -> Outcome:
    return Outcome.failure(ErrorInfo("TimeoutError", f"task {fn_path} ran past its timeout of"
                                                     f" {timeout}s and was stopped"))


class Runner(Protocol):
    def run(self, fn_path: str, args_blob: bytes, timeout: float | None) -> Outcome: ...

    def close(self, kill: bool = False) -> None: ...


class ThreadRunner:
    def __init__(self, max_result_bytes: int) -> None:
        self.max_result_bytes = max_result_bytes

    def run(self, fn_path: str, args_blob: bytes, timeout: float | None) -> Outcome:
        if timeout is None:
            return execute(fn_path, args_blob, self.max_result_bytes, timeout)
        box: list[Outcome] = []

        def run() -> None:
            try:
                box.append(execute(fn_path, args_blob, self.max_result_bytes, timeout))
            finally:
                close_loop()  # this thread ends: its event loop, if an async task made one

        # The task's thread sees this one's context variables: balancer.context's run.
        thread = threading.Thread(target=contextvars.copy_context().run, args=(run,),
                                  name=f"task-{fn_path}", daemon=True)
        thread.start()
        thread.join(timeout)
        if thread.is_alive():
            log.warning("task %s passed its timeout of %ss; its thread is abandoned", fn_path,
                        timeout)
            return _timeout(fn_path, timeout)
        return box[0]

    def close(self, kill: bool = False) -> None:
        pass
