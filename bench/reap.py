"""Waiting for processes to end, on hosts whose init reaps orphans late.

A pool child or a forkserver whose supervisor was killed is an orphan: it dies at once,
but stays a zombie until the host's init reaps it, which on some hosts (a microVM's init
here) takes a second and a half. ``psutil.wait_procs`` waits for the reaping; a test or a
bench waiting on every orphan so spent that long each time for nothing. A zombie runs
nothing and holds no connection: it has ended.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import psutil


def ended(proc: psutil.Process | int) -> bool:
    """Gone, or a zombie (a process or a pid)."""
    try:
        if isinstance(proc, int):
            proc = psutil.Process(proc)
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_ended(procs: Iterable[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended (``ended``), ``timeout`` seconds at most;
    returns those still running."""
    left = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in left if not ended(p)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.01)
