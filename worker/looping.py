"""A looping task run (Prefect 1's ``LOOP``) on the worker.

A task that raises ``LOOP(result=...)`` is called again at once, in the same run and the
same slot, with that result as ``context.task_loop_result`` and ``task_loop_count`` one
more (balancer/runcontext.py). Two things make it a run like any other:

- Its progress is recorded on its task (``LoopStore``, loop.lua, fenced by the lease), so
  that its retry, or its run after a crash, goes on from the last iteration, as Prefect
  1's does. Only data is kept (msgpack); with signing keys it is signed, and a stored
  progress no key signed is ignored (the loop starts over).
- Its timeout bounds each iteration, as Prefect 1's does: each one restarts the clock of
  the runner that enforces it (``restart``: a thread pool's slot, or the pool child's
  record, which its supervisor reads), and loop.lua pushes the lease's deadline in Redis,
  which the dispatcher would otherwise find passed while the loop runs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, NamedTuple

import redis
from balancer.common import codec
from balancer.common.codec import CodecError
from balancer.common.runsignals import LOOP
from balancer.common.scripts import Scripts
from balancer.common.signals import Lease
from balancer.common.signing import Signer

from balancer import runcontext

log = logging.getLogger("worker")

_restart: ContextVar[Callable[[], None] | None] = ContextVar("balancer_loop_clock",
                                                            default=None)


def restarting(restart: Callable[[], None] | None) -> None:
    """Called by a runner in the context its task runs in: ``restart`` restarts the clock
    of the task's timeout (None: nothing to restart)."""
    _restart.set(restart)


def next_iteration(signal: LOOP) -> None:
    """The run raised ``signal``: record it, restart the timeout's clock; the caller calls
    the task again. RuntimeError outside a task run (nothing would carry the result)."""
    facts = runcontext.current()
    if facts is None:
        raise RuntimeError("LOOP was raised outside a task run: only a task run on a worker"
                           " can loop")
    count = facts.looped(signal.result)
    log.info("task=%s name=%s loops: iteration %d%s", facts.task_run_id, facts.task_name,
             count, f" ({signal.message})" if signal.message else "")
    restart = _restart.get()
    if restart is not None:
        restart()


class LoopStore(NamedTuple):
    """Where a run of ``lease`` keeps its loop's progress: its task's record. (A named
    tuple: one is made per task run, and it costs a fraction of a dataclass.)"""

    scripts: Scripts  # of the lease's partition
    signer: Signer | None
    worker_id: str
    lease: Lease
    grace_ms: int  # the dispatcher's grace past a task's timeout (BALANCER_TIMEOUT_GRACE)
    max_bytes: int  # the largest progress kept (BALANCER_MAX_PAYLOAD_BYTES)

    def save(self, count: int, result: Any) -> None:
        """Record iteration ``count`` and its result, and push the lease's deadline. A
        result that cannot be kept (not msgpack, too big) records that the loop must
        start over; a write Redis refuses is logged, and the loop goes on."""
        task_id = self.lease.task_id
        try:
            # A LOOP with no result carries itself (Prefect 1's rule): kept as its message.
            inner = (codec.pack([count, None, result.message]) if isinstance(result, LOOP)
                     else codec.pack([count, result]))
            if len(inner) > self.max_bytes:
                raise CodecError(f"{len(inner)} bytes, over {self.max_bytes}")
        except CodecError as exc:
            log.warning("task=%s: its loop's result cannot be kept (%s): a retry starts the"
                        " loop over", task_id, exc)
            inner = b""
        sig = self.signer.sign(_signed(task_id, inner)) if self.signer and inner else ""
        deadline = (int(self.lease.timeout * 1000) + self.grace_ms
                    if self.lease.timeout is not None else 0)
        try:
            self.scripts.record_loop(self.worker_id, task_id, self.lease.token,
                                     codec.pack([inner, sig]), deadline)
        except redis.RedisError as exc:
            log.warning("task=%s: its loop's progress was not recorded (%s)", task_id, exc)

    def load(self, raw: bytes | None) -> tuple[int, Any] | None:
        """The progress an earlier run of the task recorded (``raw``: its record's field):
        (iteration, result), or None to start the loop (none, or unreadable, or not
        signed with a signing key where the worker has some)."""
        if not raw:
            return None
        try:
            inner, sig = codec.unpack(raw)
            if not inner:
                return None
            if self.signer is not None and not self.signer.verify(
                    _signed(self.lease.task_id, inner), str(sig).encode()):
                log.warning("task=%s: its loop's recorded progress is not signed with a"
                            " signing key; the loop starts over", self.lease.task_id)
                return None
            count, result, *itself = codec.unpack(inner)
            return int(count), (LOOP(str(itself[0])) if itself else result)
        except (CodecError, TypeError, ValueError) as exc:
            log.warning("task=%s: its loop's recorded progress is unreadable (%s); the loop"
                        " starts over", self.lease.task_id, exc)
            return None


def _signed(task_id: str, inner: bytes) -> bytes:
    """What a progress's signature covers: the task's id too, so that one task's cannot
    be copied onto another's record."""
    return task_id.encode() + b"|" + inner
