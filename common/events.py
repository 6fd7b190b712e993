"""The ``events`` stream: what happened in the cluster, for dashboards, metrics and
``balancer events``. This module owns its kinds and its entry format; the Lua scripts
write the entries (the prelude's ``emit``, ``emit_tasks`` and ``emit_tasks_and_flows``
mirror ``encode``), and everything else reads them through ``decode``.

Per-task events are written by the scripts that make the change (ack, fail,
mark_running, reap, assign, submit_small), in the same call: no extra round trip. A call
that settles several tasks (a batch of acks) writes one entry holding them all, so an
entry decodes to one ``Event`` per task; an ack's entry also holds the flows it settled
(field ``ff``), so that a one-task flow's ack is one write to the stream, not two. The
stream is capped (``XADD MAXLEN ~ N``, ``BALANCER_EVENTS_MAX``): a reader that falls more
than N entries behind loses the oldest. ``BALANCER_TASK_EVENTS=off`` leaves out the
per-task kinds (and the one write they cost per script call); the cluster kinds are
always written (a flow.finished then as an entry of its own).

An entry's fields (all strings):

| field | what |
| ----- | ---- |
| k     | the kind (below) |
| w     | the worker (task and worker kinds, dispatch) or dispatcher (leader.changed) |
| t     | task kinds: the tasks, each 8 length-prefixed fields (``<len>:<bytes>``): id, flow, |
|       | queue, name, ready ms, started ms, finished ms, detail (error or reason) |
| ff    | task.completed: the flows the same call settled, each 4 length-prefixed fields: |
|       | id, state, name, task count (a ``flow.finished`` event each, after the tasks') |
| f, s  | flow.finished: the flow id and its final state; n: its task count, m: its name |
| q, n  | dispatch: the queue and how many tasks were leased; v: ``dispatcher`` or ``offer`` |
| n, x  | worker.reaped / worker.left: tasks re-queued, tasks quarantined |
| d     | a detail: leader.changed the epoch; anything else free text |

The entry's time is its stream id (Redis time, ms).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

TASK_STARTED = "task.started"  # marked running (a run past 20 ms; shorter runs are not)
TASK_COMPLETED = "task.completed"
TASK_FAILED = "task.failed"  # for good (retries used up, or not retryable)
TASK_RETRIED = "task.retried"  # a retry scheduled, or put back after a crash
TASK_QUARANTINED = "task.quarantined"
TASK_CANCELLED = "task.cancelled"  # written by a flow's cancel
TASK_SKIPPED = "task.skipped"  # raised SKIP (Prefect 1's signal)
DISPATCH = "dispatch"  # tasks leased to a worker, by the dispatcher or a standing offer
WORKER_JOINED = "worker.joined"
WORKER_LEFT = "worker.left"  # deregistered (stopped); its unstarted leases went back
WORKER_REAPED = "worker.reaped"  # declared dead: its leases went back
FLOW_FINISHED = "flow.finished"
LEADER_CHANGED = "leader.changed"

TASK_KINDS = frozenset({TASK_STARTED, TASK_COMPLETED, TASK_FAILED, TASK_RETRIED,
                        TASK_QUARANTINED, TASK_CANCELLED, TASK_SKIPPED})
KINDS = TASK_KINDS | {DISPATCH, WORKER_JOINED, WORKER_LEFT, WORKER_REAPED, FLOW_FINISHED,
                      LEADER_CHANGED}
TASK_FIELDS = 8  # per task in the ``t`` field
FLOW_FIELDS = 4  # per flow in the ``ff`` field


class EventError(ValueError):
    """An entry that is not an event of this schema."""


@dataclass(frozen=True)
class Event:
    """One thing that happened. Fields that do not apply to the kind are empty / None."""

    kind: str
    at_ms: int  # from the stream id
    stream_id: str = ""
    worker: str = ""
    task: str = ""
    flow: str = ""
    queue: str = ""
    name: str = ""  # the task's name, or the flow's (flow.finished)
    ready_ms: int | None = None  # when the task became ready (queued, or its retry due)
    started_ms: int | None = None
    finished_ms: int | None = None
    state: str = ""  # flow.finished: completed or failed
    count: int | None = None  # dispatch: tasks leased; flow: tasks; worker: re-queued
    lost: int | None = None  # worker.reaped/left: tasks quarantined
    via: str = ""  # dispatch: dispatcher or offer
    detail: str = ""  # the error, why, or the leader's epoch

    @property
    def run_ms(self) -> int | None:
        if self.started_ms is None or self.finished_ms is None:
            return None
        return max(0, self.finished_ms - self.started_ms)

    @property
    def wait_ms(self) -> int | None:
        """From ready to started: how long the task waited for a worker."""
        if self.started_ms is None or self.ready_ms is None:
            return None
        return max(0, self.started_ms - self.ready_ms)

    def to_dict(self) -> dict[str, Any]:
        """The fields that apply (JSON lines of ``balancer events --json``)."""
        return {k: v for k, v in asdict(self).items() if v not in ("", None)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _field(value: object) -> bytes:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return str(len(raw)).encode() + b":" + raw


def _fields(raw: bytes) -> list[bytes]:
    """Split length-prefixed fields (the Lua ``lp`` helper's output)."""
    out, pos = [], 0
    while pos < len(raw):
        colon = raw.find(b":", pos)
        if colon < 0:
            raise EventError("a task record is cut short")
        try:
            size = int(raw[pos:colon])
        except ValueError:
            raise EventError("a task record has a bad length") from None
        start = colon + 1
        if size < 0 or start + size > len(raw):
            raise EventError("a task record is cut short")
        out.append(raw[start:start + size])
        pos = start + size
    return out


def _count(raw: bytes | str | None) -> int | None:
    """A number, or None when absent or unreadable."""
    if raw is None or raw in (b"", ""):
        return None
    try:
        return int(float(raw))
    except (ValueError, OverflowError):
        return None


def _ms(raw: bytes | str | None) -> int | None:
    """A time in ms, or None when absent, unreadable or 0 ("not known")."""
    value = _count(raw)
    return value if value is not None and value > 0 else None


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", "replace") if raw else ""


def task_record(task: str, flow: str = "", queue: str = "", name: str = "",
                ready_ms: int | None = None, started_ms: int | None = None,
                finished_ms: int | None = None, detail: str = "") -> bytes:
    """One task of a ``t`` field, as the prelude's ``task_record`` writes it."""
    return b"".join(_field("" if v is None else v) for v in (
        task, flow, queue, name, ready_ms, started_ms, finished_ms, detail))


def flow_record(flow: str, state: str, name: str = "", count: int | None = None) -> bytes:
    """One flow of an ``ff`` field, as the prelude's ``emit_tasks_and_flows`` writes it."""
    return b"".join(_field("" if v is None else v) for v in (flow, state, name, count))


def encode(kind: str, *, worker: str = "", tasks: tuple[bytes, ...] = (),
           flows: tuple[bytes, ...] = (), **extra: str | int) -> dict[str, bytes]:
    """The fields of an entry written from Python (XADD them with ``emit``)."""
    if kind not in KINDS:
        raise EventError(f"unknown event kind {kind!r}")
    fields: dict[str, bytes] = {"k": kind.encode()}
    if worker:
        fields["w"] = worker.encode()
    if tasks:
        fields["t"] = b"".join(tasks)
    if flows:
        fields["ff"] = b"".join(flows)
    for name, value in extra.items():
        if name not in ("f", "s", "q", "n", "x", "v", "d", "m"):
            raise EventError(f"unknown event field {name!r}")
        fields[name] = str(value).encode()
    return fields


def emit(client: Any, key: str, cap: int, fields: Mapping[str, bytes]) -> None:
    """Append an entry written from Python, capped like the scripts' (approximately)."""
    if cap > 0:
        client.xadd(key, dict(fields), maxlen=cap, approximate=True)


def decode(stream_id: bytes | str, fields: Mapping[bytes, bytes]) -> list[Event]:
    """The events of one stream entry: one per task for task kinds. Raises EventError for
    an entry that is not of this schema (anyone who can write the stream can write one)."""
    sid = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
    try:
        at_ms = int(sid.split("-", 1)[0])
    except ValueError:
        raise EventError(f"bad stream id {sid!r}") from None
    kind = _text(fields.get(b"k"))
    if kind not in KINDS:
        raise EventError(f"unknown event kind {kind[:40]!r}")
    worker = _text(fields.get(b"w"))
    if kind in TASK_KINDS:
        parts = _fields(fields.get(b"t", b""))
        if not parts or len(parts) % TASK_FIELDS:
            raise EventError(f"{kind} entry without whole task records")
        events = []
        for i in range(0, len(parts), TASK_FIELDS):
            task, flow, queue, name, ready, started, finished, detail = \
                parts[i:i + TASK_FIELDS]
            events.append(Event(kind, at_ms, sid, worker, _text(task), _text(flow),
                                _text(queue), _text(name), _ms(ready), _ms(started),
                                _ms(finished), detail=_text(detail)))
        return events + _flows_finished(at_ms, sid, fields.get(b"ff"))
    common: dict[str, Any] = {"worker": worker, "detail": _text(fields.get(b"d"))}
    if kind == FLOW_FINISHED:
        common.update(flow=_text(fields.get(b"f")), state=_text(fields.get(b"s")),
                      name=_text(fields.get(b"m")), count=_count(fields.get(b"n")))
    elif kind == DISPATCH:
        common.update(queue=_text(fields.get(b"q")), count=_count(fields.get(b"n")),
                      via=_text(fields.get(b"v")))
    elif kind in (WORKER_REAPED, WORKER_LEFT):
        common.update(count=_count(fields.get(b"n")), lost=_count(fields.get(b"x")))
    return [Event(kind, at_ms, sid, **common)]


def _flows_finished(at_ms: int, sid: str, raw: bytes | None) -> list[Event]:
    """The flow.finished events an ``ff`` field holds (none when absent)."""
    if not raw:
        return []
    parts = _fields(raw)
    if len(parts) % FLOW_FIELDS:
        raise EventError("an ff field without whole flow records")
    return [Event(FLOW_FINISHED, at_ms, sid, flow=_text(flow), state=_text(state),
                  name=_text(name), count=_count(count))
            for flow, state, name, count in (parts[i:i + FLOW_FIELDS]
                                             for i in range(0, len(parts), FLOW_FIELDS))]


def _when(ms: int) -> str:
    return time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"


def line(event: Event) -> str:
    """One readable line (``balancer events``). Names and errors are shown as repr-safe
    text: one line each, whatever they hold."""
    def clean(text: str, limit: int = 160) -> str:
        text = text.replace("\n", " | ").replace("\r", " ")
        text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
        return text if len(text) <= limit else text[:limit - 1] + "…"

    parts = [_when(event.at_ms), f"{event.kind:<16}"]
    if event.task:
        parts.append(f"task={event.task} name={clean(event.name, 60)} queue={event.queue}")
    if event.flow:
        parts.append(f"flow={event.flow}")
    if event.kind == FLOW_FINISHED:
        parts.append(f"name={clean(event.name, 60)} state={event.state}"
                     f" tasks={event.count}")
    if event.kind == DISPATCH:
        parts.append(f"queue={event.queue} tasks={event.count} via={event.via}")
    if event.worker:
        parts.append(f"{'dispatcher' if event.kind == LEADER_CHANGED else 'worker'}"
                     f"={event.worker}")
    if event.kind in (WORKER_REAPED, WORKER_LEFT):
        parts.append(f"requeued={event.count or 0} quarantined={event.lost or 0}")
    if event.wait_ms is not None:
        parts.append(f"waited={event.wait_ms}ms")
    if event.run_ms is not None:
        parts.append(f"ran={event.run_ms}ms")
    if event.detail:
        parts.append(("epoch=" if event.kind == LEADER_CHANGED else "") + clean(event.detail))
    return "  ".join(parts)


@dataclass(frozen=True)
class Config:
    """What a process's scripts write to the stream: its cap, and whether per-task kinds."""

    cap: int = 10000
    tasks: bool = True

    @classmethod
    def from_settings(cls, settings: Any) -> Config:
        return cls(int(settings.events_max), settings.task_events == "on")

    @property
    def argv(self) -> tuple[int, str]:
        """The two script arguments: cap, task events ('1' or '0')."""
        return self.cap, "1" if self.tasks else "0"
