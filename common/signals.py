"""Short messages on the ``wake`` list that tell the dispatcher something changed.

The dispatcher BLPOPs the list instead of polling. Signals are hints: losing one costs
a little latency, never a task, because the dispatcher also looks on a timer.
The Lua scripts write the same formats; this module is the only Python that reads them.

    s                         tasks were submitted (or a queue got new work)
    a|<worker>                a worker acknowledged a task: one slot is free again
    h|<worker>|<leased>|<hb>  heartbeat: tasks leased to it now, then the msgpack WorkerInfo
    x|<worker>                a worker deregistered: reap it now
    q                         a queue's configuration changed
    c                         failed tasks wait in ``cascade`` for their dependents to fail
"""

from __future__ import annotations

from dataclasses import dataclass

SUBMITTED = "s"
ACK = "a"
HEARTBEAT = "h"
GONE = "x"
QUEUES = "q"
CASCADE = "c"


@dataclass(frozen=True)
class Signal:
    kind: str
    worker: str = ""
    leased: int = 0
    blob: bytes = b""


def parse(raw: bytes) -> Signal | None:
    """Read one signal; None for anything unreadable (it is logged by the caller)."""
    kind, _, rest = raw.partition(b"|")
    try:
        k = kind.decode()
        if k in (SUBMITTED, QUEUES, CASCADE):
            return Signal(k)
        if k in (ACK, GONE):
            return Signal(k, worker=rest.decode())
        if k == HEARTBEAT:
            worker, leased, blob = rest.split(b"|", 2)
            return Signal(k, worker=worker.decode(), leased=int(leased), blob=blob)
    except (UnicodeDecodeError, ValueError):
        return None
    return None


def inbox_entry(task_id: str, attempt: int) -> str:
    return f"{task_id}|{attempt}"


def parse_inbox_entry(raw: bytes) -> tuple[str, int] | None:
    task_id, _, attempt = raw.decode(errors="replace").partition("|")
    try:
        return task_id, int(attempt)
    except ValueError:
        return None
