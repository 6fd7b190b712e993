"""Ask a process-pool task's retry condition about a run its supervisor killed past the
task's timeout, before the run is settled.

Prefect 3 asks ``retry_condition_fn`` of a run that timed out, with the TimeoutError; a
thread-pool worker asks it on the slot's thread (worker.statehooks.timed_out). In the
process pool the run's process is gone, and the supervisor runs no task code (a task's
import or its condition that hangs or crashes must cost it nothing): a short-lived process
of the pool, forked by its forkserver with the task code preloaded, loads the task under
the worker's rules, asks, and answers over a pipe. One that does not answer within
``ANSWER_WAIT`` is killed and the run retried, as before there was a condition to ask.
"""

from __future__ import annotations

import contextlib
import logging
import os
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from balancer.common import codec
from balancer.worker import child
from balancer.worker.child import ChildSpec
from balancer.worker.statehooks import Killed

if TYPE_CHECKING:
    from multiprocessing.context import ForkServerContext, SpawnContext

log = logging.getLogger("worker")

ANSWER_WAIT = 10.0  # seconds a condition may take before the run is retried anyway


def retry_wanted(ctx: ForkServerContext | SpawnContext, spec: ChildSpec, killed: Killed,
                 wait: float = ANSWER_WAIT) -> bool:
    """Whether the killed run is retried, as its task's retry condition says (True when
    it has none, or no answer comes within ``wait`` seconds)."""
    conn, their_conn = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_answer, args=(their_conn, spec, codec.pack([*killed])),
                          name="balancer-ask-retry", daemon=True)
    process.start()
    their_conn.close()
    try:
        if conn.poll(wait):
            with contextlib.suppress(EOFError, OSError, codec.CodecError):
                return bool(codec.unpack(conn.recv_bytes()))
        else:
            log.warning("task=%s: its retry condition gave no answer within %.0fs; retried",
                        killed.task_id, wait)
        return True
    finally:
        conn.close()
        if process.is_alive():
            process.kill()
        process.join(5)


def _answer(conn: Connection, spec: ChildSpec, packed: bytes) -> None:
    """In the asking process: set up as a pool child is (it dies with the supervisor,
    imports under the worker's rules, its --import modules first), ask, answer."""
    child.prepare(spec)
    wanted = True
    try:
        child.import_modules(spec)
        wanted = Killed(*codec.unpack(packed)).retry_wanted(spec.worker_id)
    except BaseException:  # whatever it was, the run settles as it did before
        log.exception("pool process pid=%s: cannot ask a retry condition", os.getpid())
    with contextlib.suppress(OSError):
        conn.send_bytes(codec.pack(wanted))
    conn.close()
