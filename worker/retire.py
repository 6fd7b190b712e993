"""When a pool child makes way for a fresh one: after so many tasks, or once its resident
memory passed a bound (``worker start --max-tasks-per-child``, ``--max-memory-per-child``).

A long-lived process grows: caches of the libraries its tasks use, a leak in one of them.
Left alone it ends killed by the kernel's OOM killer, in the middle of a task that then
counts as a crash. A child due to retire takes no lease past its bound, finishes the batch
it holds, stores the results, tells its supervisor why and exits; the supervisor starts a
fresh one at once (forked from the pool's forkserver in milliseconds when the worker has
several slots). Nothing is handed back and nothing counts as a crash.
"""

from __future__ import annotations

from dataclasses import dataclass

import psutil

MB = 1 << 20


@dataclass
class Retirement:
    """A child's bounds (0: none) and what it has run so far."""

    max_tasks: int = 0
    max_memory_mb: int = 0
    done: int = 0

    def __post_init__(self) -> None:
        self._process = psutil.Process() if self.max_memory_mb else None

    @classmethod
    def of(cls, max_tasks: int, max_memory_mb: int) -> Retirement | None:
        """None when the child has no bound: it then pays nothing per task."""
        return cls(max_tasks, max_memory_mb) if max_tasks or max_memory_mb else None

    def left(self, wanted: int) -> int:
        """How many of ``wanted`` leases the child may still take (at least one until it
        retires): it never takes a lease past its task bound."""
        if not self.max_tasks:
            return wanted
        return max(1, min(wanted, self.max_tasks - self.done))

    def after_task(self) -> str | None:
        """Count a task run; why the child should retire now, or None. Resident memory is
        read here, once per task (a read of /proc, a few microseconds)."""
        self.done += 1
        if self.max_tasks and self.done >= self.max_tasks:
            return f"{self.done} tasks (max_tasks_per_child {self.max_tasks})"
        if self._process is not None:
            rss = self._process.memory_info().rss
            if rss > self.max_memory_mb * MB:
                return (f"{self.done} tasks: resident memory {rss / MB:.0f} MB is over"
                        f" max_memory_per_child {self.max_memory_mb} MB")
        return None
