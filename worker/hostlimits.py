"""What this host can hold: a ``--concurrency`` far past it (a typo, 100000 for 10) is
refused at start, naming the limit, instead of taking the host down.

With the process pool each slot is a process: an idle pool child forked from the
forkserver holds 10-11 MB of its own (measured here, USS), so a count whose floor passes
the host's memory cannot run, and forking towards it would have the kernel's OOM killer
pick among every process of the host. With the thread pool each slot is a thread: the
limit is the host's (threads, or memory for their stacks), which the worker learns when a
thread cannot start (``Worker.start``); 100,000 threads had it abort with "libgcc_s.so.1
must be installed for pthread_exit to work", registered and dead.
"""

from __future__ import annotations

import psutil

# The memory of its own an idle pool child holds at the least (bytes).
CHILD_MEMORY = 10 * 2**20


def too_many(concurrency: int, pool: str, memory: int | None = None) -> str | None:
    """Why this host (of ``memory`` bytes; this one's by default) cannot hold
    ``concurrency`` slots of ``pool``, or None."""
    if pool != "process":
        return None
    total = psutil.virtual_memory().total if memory is None else memory
    need = concurrency * CHILD_MEMORY
    if need <= total:
        return None
    return (f"--concurrency {concurrency} with the process pool starts {concurrency}"
            f" processes, {need / 2**30:.1f} GiB at the least, more than this host's"
            f" {total / 2**30:.1f} GiB: start at most {total // CHILD_MEMORY}, or use"
            " --pool thread for tasks that mostly wait")
