"""Records both sides share: task and flow states, a worker's heartbeat, a queue's config."""

from __future__ import annotations

import itertools
import math
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from balancer.common import codec
from balancer.common.protocol import VERSION as PROTOCOL
from balancer.common.protocol import release as installed_release


class TaskState:
    """Every state a task passes through. Transitions happen only inside the Lua scripts.

    pending -(deps met)-> queued -(leased, and run for 20 ms)-> running -(ack)-> completed
    queued|running -(error, retries left)-> retrying -(due)-> queued
    scheduled (a flow submitted with a delay: its first tasks) -(due)-> queued, or pending
    in the gate (a gated one)
    queued|running -(error)-> failed ; pending -(upstream failed)-> upstream_failed
    queued|running -(raised SKIP)-> skipped ; pending -(upstream skipped)-> skipped
    pending -(gated: its trigger or a map, decided by the dispatcher)-> queued, skipped,
    upstream_failed, or running (a map: its children run) -(all settled)-> completed,
    failed or skipped
    leased -(worker dead)-> queued, or dead (quarantined) past the poison threshold
    any state not terminal -(its flow cancelled)-> cancelled

    A lease is not a state: it is the task's member in its worker's leases set, so a task
    leased and not yet marked running still reads "queued" (it is no longer in its queue).
    """

    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SCHEDULED = "scheduled"  # a flow's first task, waiting for the start it was given
    COMPLETED = "completed"
    FAILED = "failed"
    UPSTREAM_FAILED = "upstream_failed"
    DEAD = "dead"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # raised SKIP, or an upstream did (Prefect 1's Skipped: a success)

    TERMINAL = frozenset({COMPLETED, FAILED, UPSTREAM_FAILED, DEAD, CANCELLED, SKIPPED})


def visible_state(state: str, deps: int) -> str:
    """The state as users see it: a pending task whose upstreams all completed is queued
    (completing the last upstream queues it without rewriting its state)."""
    return TaskState.QUEUED if state == TaskState.PENDING and deps <= 0 else state


class FlowState:
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    FINISHED = frozenset({COMPLETED, FAILED, CANCELLED})


_counter = itertools.count()
_id_lock = threading.Lock()
# Seeded from the OS once per process (and again in a forked child, which must not repeat
# its parent's ids): an os.urandom call per id cost a system call per task submitted.
_random = random.Random(os.urandom(16))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _random.seed(os.urandom(16)))


def new_id() -> str:
    """A 24-hex-digit id that sorts by creation time within one process.

    Queue zsets break score ties by member order, so time-ordered ids keep FIFO among
    tasks of equal priority submitted in the same millisecond.
    """
    with _id_lock:
        n = next(_counter) & 0xFFFF
        tail = _random.getrandbits(36)
    return f"{time.time_ns() // 1_000_000:011x}{n:04x}{tail:09x}"


@dataclass(frozen=True)
class QueueConfig:
    name: str
    priority: int = 0
    concurrency_limit: int | None = None
    paused: bool = False

    @classmethod
    def from_hash(cls, name: str, fields: dict[bytes, bytes]) -> QueueConfig:
        return cls.parse(name, fields)[0]

    @classmethod
    def parse(cls, name: str, fields: dict[bytes, bytes]) -> tuple[QueueConfig, list[str]]:
        """The config, and what in ``fields`` was not usable. A setting that is not a
        number (written by hand) must not stop the dispatcher from reading every other
        queue's: its default stands in, and the problem is told to the caller."""
        problems: list[str] = []

        def number(key: str, default: int | None) -> int | None:
            raw = fields.get(key.encode())
            if raw is None or raw == b"":
                return default
            try:
                return int(raw.decode())
            except (UnicodeDecodeError, ValueError):
                shown = raw[:40].decode("utf-8", "backslashreplace")
                problems.append(f"{key} {shown!r} is not an integer: {default} used")
                return default

        return cls(
            name=name,
            priority=number("priority", 0) or 0,
            concurrency_limit=number("concurrency_limit", None),
            paused=fields.get(b"paused", b"0") == b"1",
        ), problems


def _number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


def _count(value: Any) -> bool:
    return _number(value) and isinstance(value, int)


def _text(value: Any) -> bool:
    return isinstance(value, str)


# What each field of a heartbeat's report must be: the dispatcher computes with them at
# every round, so a report that is not (written into Redis by hand, or by a writer that
# means harm) must be refused where it is read, not fail every round after it.
_REPORT_CHECKS: dict[str, Callable[[Any], bool]] = {
    "id": _text,
    "queues": lambda v: isinstance(v, (list, tuple)) and all(_text(q) for q in v),
    "capacity": _count,
    "running": _count,
    "long_running": _count,
    "cpu": _number, "pressure": _number, "memory": _number, "load_avg": _number,
    "host": _text,
    "pid": _count,
    "pool": _text,
    "started": _number,
    "durations": lambda v: isinstance(v, dict) and all(
        _text(q) and _number(ms) for q, ms in v.items()),
    "stuck": _count,
    "protocol": _count,
    "release": _text,
    "beat_s": _number,
}


def _check_report(fields: dict[str, Any]) -> None:
    """Raise CodecError naming the fields of a heartbeat's report of the wrong kind."""
    wrong = sorted(k for k, v in fields.items() if not _REPORT_CHECKS[k](v))
    if wrong:
        raise codec.CodecError(f"heartbeat fields of the wrong kind: {', '.join(wrong)}")


# Changes of a host's load share (cpu pressure, memory) and of mean task run times (as a
# fraction) that a worker does not report between full heartbeats.
LOAD_NOISE = 0.1
DURATION_NOISE = 0.25


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker reports in each heartbeat."""

    id: str
    queues: tuple[str, ...]
    capacity: int
    running: int = 0
    # Slots busy with a task that ran past the prefetch horizon: leases prefetched behind
    # one would wait for it, so the dispatcher prefetches only for the other slots.
    long_running: int = 0
    cpu: float = 0.0  # use of the cores the worker may run on, 0..1
    pressure: float = 0.0  # the part of that use from other processes, 0..1
    memory: float = 0.0  # host memory use, 0..1
    load_avg: float = 0.0  # 1-minute load average per core
    host: str = ""
    pid: int = 0
    pool: str = "process"
    started: float = field(default_factory=time.time)
    # Recent mean run time of tasks per queue, in ms: short tasks may be prefetched.
    durations: dict[str, float] = field(default_factory=dict)
    # Thread pool: task threads given up (a timeout, a cancel) that do not stop, inside a
    # call that does not return to Python (worker.interrupt): each holds what it holds.
    stuck: int = 0
    # The version of the formats it reads and writes (common/protocol.py: VERSION; read
    # as 0 from a worker of a release from before it was reported), and its release.
    protocol: int = PROTOCOL
    release: str = field(default_factory=installed_release)
    # How often it beats (its BALANCER_HEARTBEAT_INTERVAL; 0 from a release that did not
    # say): a dispatcher waits as many of its beats as of its own before calling it dead.
    beat_s: float = 0.0

    def tells_more_than(self, sent: WorkerInfo) -> bool:
        """Whether the dispatcher should hear this report although it heard ``sent``: what
        it schedules by changed (slots, queues, long runs, the host's load beyond noise, the
        tasks' run times), or what operators watch (threads that do not stop), not just the
        jitter of a sample."""
        if (self.queues, self.capacity, self.running, self.long_running, self.stuck) != (
                sent.queues, sent.capacity, sent.running, sent.long_running, sent.stuck):
            return True
        if (abs(self.pressure - sent.pressure) > LOAD_NOISE
                or abs(self.memory - sent.memory) > LOAD_NOISE):
            return True
        if self.durations.keys() != sent.durations.keys():
            return True
        return any(abs(ms - sent.durations[q]) > DURATION_NOISE * max(sent.durations[q], 0.1)
                   for q, ms in self.durations.items())

    def to_blob(self) -> bytes:
        data = asdict(self)
        data["queues"] = list(self.queues)
        return codec.pack(data)

    @classmethod
    def readable(cls, blob: Any) -> WorkerInfo | None:
        """The report in ``blob``, or None when there is none or it cannot be read."""
        if not isinstance(blob, bytes):
            return None
        try:
            return cls.from_blob(blob)
        except (codec.CodecError, TypeError, ValueError):
            return None

    @classmethod
    def from_blob(cls, blob: bytes) -> WorkerInfo:
        data: dict[str, Any] = codec.unpack(blob)
        if not isinstance(data, dict):
            raise codec.CodecError("heartbeat is not a map")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known.setdefault("protocol", 0)  # a release from before it was reported
        known.setdefault("release", "")
        _check_report(known)
        known["queues"] = tuple(known.get("queues", ()))
        return cls(**known)
