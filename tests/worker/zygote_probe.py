"""Run by tests/worker/test_zygote.py as ``python -m tests.worker.zygote_probe [threads]``:
start a pool's forkserver with ``worker.zygote`` (with another thread running, when asked),
start a process from it, and print what came of it as JSON."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import threading
from multiprocessing import forkserver
from multiprocessing.connection import Connection

import psutil
from balancer.worker import zygote


def report(conn: Connection) -> None:
    conn.send(os.getppid())
    conn.close()


def main() -> None:
    if sys.argv[1:] == ["threads"]:
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    started = zygote.start([])
    ctx = multiprocessing.get_context("forkserver")
    parent, child = ctx.Pipe()
    process = ctx.Process(target=report, args=(child,))
    process.start()
    child.close()
    parent_of_process = parent.recv()
    process.join(30)
    server = psutil.Process(forkserver._forkserver._forkserver_pid)  # type: ignore[attr-defined]
    print(json.dumps({
        "started": started, "me": os.getpid(), "server": server.pid, "server_parent": server.ppid(),
        "forked": server.cmdline() == psutil.Process().cmdline(),
        "parent_of_process": parent_of_process, "exitcode": process.exitcode}))


if __name__ == "__main__":
    main()
