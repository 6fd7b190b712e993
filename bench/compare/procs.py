"""Resident memory and CPU time of a process tree: a worker command with its pool children,
or a dispatcher. Summed over the tree because every system splits a worker differently
(Celery and Huey fork pool children, RQ forks a work horse per job, ours a process pool).
"""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import suppress

import psutil

MB = 1024 * 1024


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its descendants alive now (empty if ``pid`` is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_rss(pid: int) -> int:
    """Bytes resident in ``pid`` and its descendants. Pages a forked child still shares
    with its parent count once per process, as RSS counts them (``ps``/``top`` agree)."""
    total = 0
    for proc in tree(pid):
        with suppress(psutil.NoSuchProcess):  # exited between listing and reading
            total += proc.memory_info().rss
    return total


def tree_pss(pid: int) -> int:
    """Bytes of ``pid`` and its descendants in proportional set size: a page shared by n
    processes counts 1/n in each, so the sum over the tree is what the tree holds in RAM
    (a forked child's pages shared with its parent count once, not once per process).
    Linux only (``/proc/<pid>/smaps_rollup``); 0 where it cannot be read."""
    total = 0
    for proc in tree(pid):
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied, AttributeError):
            total += proc.memory_full_info().pss
    return total


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its live descendants, plus those of
    the children they have already reaped (RQ's work horses, recycled pool children).
    A child that exits between two readings takes its time away only until its parent
    reaps it, so read deltas over runs long enough for that not to matter."""
    total = 0.0
    for proc in tree(pid):
        try:
            t = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def total_rss(pids: Iterable[int]) -> int:
    return sum(tree_rss(pid) for pid in pids)


def total_cpu(pids: Iterable[int]) -> float:
    return sum(tree_cpu(pid) for pid in pids)
