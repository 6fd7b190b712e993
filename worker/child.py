"""The loop of a pool child process: read a call from the pipe, execute it, answer.

Kept free of Redis and threads so that a task that crashes or hangs costs only this
process; the supervisor replaces it.
"""

from __future__ import annotations

import os
import signal
import sys
from multiprocessing.connection import Connection

from common import codec
from common.importpath import importing_tasks
from worker.executor import execute


def main(conn: Connection, imports: list[str], cwd: str, max_result_bytes: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when we stop
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    os.environ["BALANCER_WORKER_CHILD"] = "1"
    with importing_tasks():
        for module in imports:
            __import__(module)
    while True:
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):
            return
        if not data:
            return
        fn_path, args_blob = codec.unpack(data)
        conn.send_bytes(execute(fn_path, args_blob, max_result_bytes).to_bytes())
