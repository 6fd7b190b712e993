"""What a pool child is doing, in memory it shares with its supervisor.

A pool child fetches, runs and acknowledges its tasks itself, so a task costs the
supervisor nothing. The supervisor still must know what the child holds: to fail the task
of a child that died, to kill one past its timeout, to show long runs and make way for
them, to tell the reconciler which leases are in use. The child writes that here, with
plain stores and no system call; the supervisor reads it when it looks.

The child writes the lease's description before it moves the phase away from IDLE, and
the phase is one byte, so a reader that sees a phase other than IDLE reads a whole
description (a child killed mid-write leaves the phase at IDLE or a whole record).
``gen`` changes with every lease, so a reader tells one run from the next.

A child that takes a batch of leases also lists every lease it holds (run or not, stored
or not) in a second part, rewritten with each batch: a superset, which is what the
reconciler (never hand back a lease in use) and the settling of a dead child (hand back
all it held, fenced by the lease tokens) need.
"""

from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

from balancer.common import codec
from balancer.common.codec import CodecError
from balancer.common.signals import Lease

IDLE, TAKEN, RUNNING, FINISHING = 0, 1, 2, 3
PHASES = ("idle", "taken", "running", "finishing")

# phase, asleep, gen, started (monotonic s), started (wall ms), clock (monotonic s: when
# the run's current loop iteration started), description length, held list length
_HEAD = struct.Struct("<BBxxIdddII")
_HELD_LEN = _HEAD.size - 4
SIZE = 16384
_ROOM = 2048  # for the description
_HELD_AT = _HEAD.size + _ROOM
_HELD_ROOM = SIZE - _HELD_AT


@dataclass(frozen=True)
class Snapshot:
    phase: int
    gen: int
    started: float  # time.monotonic() of the child (the same clock in every process)
    started_ms: int
    lease: Lease | None  # without args and children: what the supervisor needs to settle it
    # When the run's timeout started counting: ``started``, or a later iteration's start
    # for a looping run (worker/looping.py: its timeout bounds each iteration).
    clock: float = 0.0


def _describe(lease: Lease) -> bytes:
    blob = codec.pack([lease.task_id, lease.token, lease.queue, lease.flow, lease.timeout,
                       lease.fn[:200], lease.name[:200], lease.partition])
    return blob if len(blob) <= _ROOM else codec.pack(
        [lease.task_id, lease.token, lease.queue[:500], lease.flow, lease.timeout, "", "",
         lease.partition])


def _read_lease(blob: bytes) -> Lease | None:
    try:
        task_id, token, queue, flow, timeout, fn, name, partition = codec.unpack(blob)
        return Lease(str(task_id), str(token), str(queue), str(flow),
                     None if timeout is None else float(timeout), str(fn), str(name), b"", b"",
                     partition=int(partition))
    except (CodecError, TypeError, ValueError):
        return None


class Record:
    def __init__(self, ctx: BaseContext) -> None:
        self.shared: Any = ctx.RawArray(ctypes.c_char, SIZE)  # passed to the child at spawn
        self._view = memoryview(self.shared).cast("B")

    @classmethod
    def attach(cls, shared: Any) -> Record:
        record = cls.__new__(cls)
        record.shared = shared
        record._view = memoryview(shared).cast("B")
        return record

    # -- the child -------------------------------------------------------------------

    def took(self, lease: Lease) -> bool:
        """The child holds ``lease`` now, to run it next. True when the supervisor sleeps
        until told."""
        view = self._view
        _, asleep, gen, _, _, _, _, _ = _HEAD.unpack_from(view)
        blob = _describe(lease)
        view[0] = IDLE
        view[_HEAD.size:_HEAD.size + len(blob)] = blob
        view[1] = 0  # told once
        struct.pack_into("<IdddI", view, 4, (gen + 1) & 0xFFFFFFFF, 0.0, 0, 0.0, len(blob))
        view[0] = TAKEN
        return bool(asleep)

    def hold(self, leases: list[Lease]) -> None:
        """The child holds these leases (taken with its batch). Those that do not fit are
        left to the reconciler."""
        view = self._view
        items = [[lease.task_id, lease.token, lease.queue, lease.partition]
                 for lease in leases]
        blob = codec.pack(items)
        while len(blob) > _HELD_ROOM:
            items = items[:len(items) // 2]
            blob = codec.pack(items)
        struct.pack_into("<I", view, _HELD_LEN, 0)
        view[_HELD_AT:_HELD_AT + len(blob)] = blob
        struct.pack_into("<I", view, _HELD_LEN, len(blob))

    def started(self, at: float, at_ms: int) -> None:
        view = self._view
        struct.pack_into("<ddd", view, 8, at, at_ms, at)
        view[0] = RUNNING

    def looped(self, at: float) -> None:
        """The run's next loop iteration starts: its timeout counts from ``at``."""
        struct.pack_into("<d", self._view, 24, at)

    def finishing(self) -> None:
        self._view[0] = FINISHING

    def idle(self) -> None:
        self._view[0] = IDLE

    # -- the supervisor --------------------------------------------------------------

    def read(self) -> Snapshot:
        view = self._view
        phase, _, gen, started, started_ms, clock, size, _ = _HEAD.unpack_from(view)
        lease = None
        if phase != IDLE:
            lease = _read_lease(bytes(view[_HEAD.size:_HEAD.size + min(size, _ROOM)]))
            if lease is None:
                phase = IDLE
        return Snapshot(phase, gen, started, int(started_ms), lease, clock)

    def held(self) -> list[tuple[str, str, str, int]]:
        """(task id, token, queue, partition) of every lease the child listed as held; a
        list being rewritten reads as empty."""
        view = self._view
        for _ in range(3):
            (size,) = struct.unpack_from("<I", view, _HELD_LEN)
            if size == 0:
                return []
            try:
                items = codec.unpack(bytes(view[_HELD_AT:_HELD_AT + min(size, _HELD_ROOM)]))
                return [(str(t), str(token), str(q), int(p)) for t, token, q, p in items]
            except (CodecError, TypeError, ValueError):
                continue
        return []

    def set_asleep(self, asleep: bool) -> None:
        """The supervisor is about to sleep until the child tells it of a new lease."""
        self._view[1] = int(asleep)

    def clear(self) -> None:
        self._view[0] = IDLE
        struct.pack_into("<I", self._view, _HELD_LEN, 0)
