"""Where a slot runs its task: in a thread, or in a child process it owns.

Each slot has its own runner, so a timeout or a crash affects that slot alone: a child
past its timeout is killed and replaced; a thread past its timeout is abandoned (Python
cannot kill a thread) and the task is failed.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from collections.abc import Callable
from typing import Protocol

from common import codec, signals
from common.codec import ErrorInfo
from worker import child
from worker.executor import Outcome, execute

log = logging.getLogger("worker")


def _timeout(fn_path: str, timeout: float) -> Outcome:
    return Outcome.failure(ErrorInfo("TimeoutError", f"task {fn_path} ran past its timeout of"
                                                     f" {timeout}s and was stopped"))


class Runner(Protocol):
    # Whether ``run`` calls ``on_long`` once the run passes signals.LONG_RUN_S.
    watches_long_runs: bool

    def run(self, fn_path: str, args_blob: bytes, timeout: float | None,
            on_long: Callable[[], None] = lambda: None) -> Outcome: ...

    def close(self, kill: bool = False) -> None: ...


class ThreadRunner:
    watches_long_runs = False  # the task runs on the calling thread: nobody to watch it

    def __init__(self, max_result_bytes: int) -> None:
        self.max_result_bytes = max_result_bytes

    def run(self, fn_path: str, args_blob: bytes, timeout: float | None,
            on_long: Callable[[], None] = lambda: None) -> Outcome:
        if timeout is None:
            return execute(fn_path, args_blob, self.max_result_bytes)
        box: list[Outcome] = []
        thread = threading.Thread(
            target=lambda: box.append(execute(fn_path, args_blob, self.max_result_bytes)),
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


class ProcessRunner:
    watches_long_runs = True

    def __init__(self, imports: list[str], max_result_bytes: int) -> None:
        self.imports = imports
        self.max_result_bytes = max_result_bytes
        self.ctx = multiprocessing.get_context("spawn")
        self._spawn()

    def _spawn(self) -> None:
        self.conn, child_conn = self.ctx.Pipe()
        self.process = self.ctx.Process(
            target=child.main, args=(child_conn, self.imports, os.getcwd(),
                                     self.max_result_bytes),
            name="balancer-task", daemon=True)
        self.process.start()
        child_conn.close()

    def _replace(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        self.conn.close()
        self._spawn()

    def run(self, fn_path: str, args_blob: bytes, timeout: float | None,
            on_long: Callable[[], None] = lambda: None) -> Outcome:
        try:
            self.conn.send_bytes(codec.pack([fn_path, args_blob]))
            horizon = signals.LONG_RUN_S if timeout is None else min(signals.LONG_RUN_S, timeout)
            done = self.conn.poll(horizon)
            if not done:
                on_long()
                done = self.conn.poll(None if timeout is None else max(0.0, timeout - horizon))
            if not done:
                log.warning("task %s passed its timeout of %ss; killing pid=%s", fn_path,
                            timeout, self.process.pid)
                self._replace()
                return _timeout(fn_path, timeout or 0)
            return Outcome.from_bytes(self.conn.recv_bytes())
        except (EOFError, OSError, BrokenPipeError):
            self.process.join(5)
            code = self.process.exitcode
            log.error("pool process pid=%s died running %s (exit code %s); replacing it",
                      self.process.pid, fn_path, code)
            self._replace()
            return Outcome.failure(ErrorInfo(
                "balancer.WorkerProcessDied",
                f"the process running task {fn_path} died (exit code {code})"), crashed=True)

    def close(self, kill: bool = False) -> None:
        try:
            if kill:
                self.process.kill()
            else:
                self.conn.send_bytes(b"")
        except OSError:
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self.conn.close()


def make_runner(pool: str, imports: list[str], max_result_bytes: int) -> Runner:
    if pool == "thread":
        return ThreadRunner(max_result_bytes)
    if pool == "process":
        return ProcessRunner(imports, max_result_bytes)
    raise ValueError(f"unknown pool {pool!r}: use 'process' or 'thread'")
