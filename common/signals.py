"""Short messages on the ``wake`` list that tell the dispatcher something changed.

The dispatcher BLPOPs the list instead of polling. Signals are hints: losing one costs
a little latency, never a task, because an idle dispatcher reads the queues again every
few seconds (``balancer.dispatcher.IDLE_RECHECK``) and a new leader reads everything.
The Lua scripts write the same formats; this module is the only Python that reads them.

    s[|<queue> <queue>...]    tasks were submitted (to those queues), or a queue got work
    S|<queue>|<id>,<id>...    a small submit made these tasks of one queue ready (and no
                              other): an idle dispatcher leases them without reading it
    r                         a retry was scheduled in ``delayed``
    a|<worker>|<n>            a worker finished tasks and holds n leases now; dependents or
                              retries may have been queued
    k|<worker>|<n>            the same, and nothing was queued: the queues are as they were
    l|<worker>|<n>            a submit took the worker's standing offer: it holds n now
    h|<worker>|<leased>|<hb>  heartbeat: tasks leased to it now, then the msgpack WorkerInfo
    x|<worker>                a worker deregistered: reap it now
    q                         a queue's configuration changed
    c                         failed tasks wait in ``cascade`` for their dependents to fail
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from balancer.common import codec

# Prefetch, agreed by dispatcher and workers: a queue whose tasks take much less than
# PREFETCH_TARGET_MS may have up to PREFETCH_MAX tasks leased per slot. A worker is
# refilled once it has run down to half that, so a worker holding more leases acknowledges
# quietly: a signal then would wake the dispatcher for nothing.
PREFETCH_TARGET_MS = 20.0
PREFETCH_MAX = 32
# A run past the prefetch horizon is long next to what prefetching assumed: the worker
# shows it as running and hands back what was prefetched behind it.
LONG_RUN_S = PREFETCH_TARGET_MS / 1000


def may_prefetch(mean_task_ms: float | None) -> bool:
    """Whether tasks of this mean run time are short enough to be leased ahead."""
    return mean_task_ms is not None and mean_task_ms < PREFETCH_TARGET_MS / 2


def prefetch_depth(mean_task_ms: float | None) -> int:
    """Tasks per slot to lease for a queue whose tasks take ``mean_task_ms`` on average.

    1 (no prefetch) unless tasks are known to be much shorter than PREFETCH_TARGET_MS:
    a long task must never wait in an inbox while another worker has a free slot.
    """
    if mean_task_ms is None or not may_prefetch(mean_task_ms):
        return 1
    return min(PREFETCH_MAX, max(1, int(PREFETCH_TARGET_MS / max(mean_task_ms, 0.1))))


def ack_quiet_above(capacity: int) -> int:
    """Leases a worker of ``capacity`` slots may hold and still ack without a signal."""
    return capacity * PREFETCH_MAX // 2


SUBMITTED = "s"
READY = "S"  # parsed as SUBMITTED, with the ids in ``ready``
RETRY = "r"
ACK = "a"
SETTLED = "k"  # parsed as ACK: an ack that queued nothing (no dependent unlocked)
OFFER_TAKEN = "l"  # a submit leased tasks with deadlines by a standing offer
HEARTBEAT = "h"
GONE = "x"
QUEUES = "q"
CASCADE = "c"


@dataclass(frozen=True)
class Signal:
    kind: str
    worker: str = ""
    leased: int = 0  # heartbeat, ack: tasks leased to the worker now
    blob: bytes = b""
    queues: tuple[str, ...] = ()  # submitted: the queues that got tasks
    ready: tuple[str, ...] | None = None  # submitted to one queue: the ids, when listed
    queued: bool = True  # ack: it may have queued tasks (the queues must be read again)


# A submit lists the ids of the tasks it made ready when they are this few, of one queue.
LISTED_IDS = 16


def small_submit(ready: dict[str, list[str]]) -> str | None:
    """The queue of a submit small enough to list its ready ids (and to take a standing
    offer): a few tasks made ready, all of one queue, and no other queue touched."""
    if len(ready) == 1:
        [(queue, ids)] = ready.items()
        if 0 < len(ids) <= LISTED_IDS:
            return queue
    return None


def submitted(ready: dict[str, list[str]]) -> str:
    """The signal a submit sends, given the ids it made ready per queue it touched. Queue
    names hold no spaces (they may hold "|"); task ids are hex."""
    queue = small_submit(ready)
    if queue is not None:
        return f"{READY}|{queue}|{','.join(ready[queue])}"
    return SUBMITTED + ("|" + " ".join(sorted(ready)) if ready else "")


def parse(raw: bytes) -> Signal | None:
    """Read one signal; None for anything unreadable (it is logged by the caller)."""
    kind, _, rest = raw.partition(b"|")
    try:
        k = kind.decode()
        if k == SUBMITTED:
            return Signal(k, queues=tuple(rest.decode().split()))
        if k == READY:
            queue, _, ids = rest.decode().rpartition("|")
            listed = tuple(i for i in ids.split(",") if i)
            if not queue or not listed:
                return None
            return Signal(SUBMITTED, queues=(queue,), ready=listed)
        if k in (RETRY, QUEUES, CASCADE):
            return Signal(k)
        if k in (ACK, SETTLED, OFFER_TAKEN):
            worker, _, count = rest.rpartition(b"|")
            return Signal(ACK if k == SETTLED else k, worker=worker.decode(),
                          leased=int(count), queued=k != SETTLED)
        if k == GONE:
            return Signal(k, worker=rest.decode())
        if k == HEARTBEAT:
            worker, leased, blob = rest.split(b"|", 2)
            return Signal(k, worker=worker.decode(), leased=int(leased), blob=blob)
    except (UnicodeDecodeError, ValueError):
        return None
    return None


class Lease(NamedTuple):
    """One inbox entry: a task leased to a worker, with everything needed to run it.

    Written by assign.lua as ``id|token|`` followed by length-prefixed fields
    (``<len>:<bytes>``): queue, flow, timeout, fn, name, children, args, sig (an entry
    older than signing ends at args). A named tuple, not a frozen dataclass: one is made
    per task, and it costs a quarter as much to make.
    """

    task_id: str
    token: str
    queue: str
    flow: str
    timeout: float | None
    fn: str
    name: str
    children: bytes
    args: bytes
    raw: bytes = b""
    sig: bytes = b""  # the client's signature of the spec (common/signing.py), if any

    @property
    def suspect(self) -> bool:
        """Held ahead by a worker that died: its start is told to Redis (see reap.lua)."""
        return self.token.endswith("!")

    @property
    def member(self) -> str:
        return lease_member(self.task_id, self.token)


LEASE_FIELDS = 7  # then the signature, in entries written since signing exists


def parse_lease(raw: bytes) -> Lease | None:
    """Read one inbox entry; None when it is not one (it is logged by the caller)."""
    try:
        task_id, token, rest = raw.split(b"|", 2)
        fields: list[bytes] = []
        pos = 0
        while pos < len(rest) or len(fields) < LEASE_FIELDS:
            colon = rest.index(b":", pos)
            size = int(rest[pos:colon])
            start = colon + 1
            if size < 0 or start + size > len(rest) or len(fields) > LEASE_FIELDS:
                return None
            fields.append(rest[start:start + size])
            pos = start + size
        queue, flow, timeout, fn, name, children, args, *sig = fields
        return Lease(task_id.decode(), token.decode(), queue.decode(), flow.decode(),
                     float(timeout) if timeout else None, fn.decode(), name.decode(),
                     children, args, raw, sig[0] if sig else b"")
    except (ValueError, UnicodeDecodeError):
        return None


# What a worker id may not hold: "|" separates the fields of signals, inbox entries and
# lease members, whitespace the members of an ahead value, braces would end the hash tag
# that keeps every key of a namespace in one cluster slot.
WORKER_ID_FORBIDDEN = frozenset("|{}")


def check_worker_id(worker_id: object) -> None:
    """Raise ValueError unless ``worker_id`` can name a worker in every message format."""
    if not isinstance(worker_id, str) or not worker_id:
        raise ValueError(f"invalid worker name {worker_id!r}: it must not be empty")
    bad = sorted({c for c in worker_id if c in WORKER_ID_FORBIDDEN or c.isspace()})
    if bad:
        raise ValueError(f"invalid worker name {worker_id!r}: it must not hold"
                         f" {', '.join(map(repr, bad))} (no '|', braces or whitespace)")


def lease_member(task_id: str, token: str) -> str:
    """A lease as a member of its worker's leases set."""
    return f"{task_id}|{token}"


def parse_lease_member(raw: bytes) -> tuple[str, str] | None:
    task_id, sep, token = raw.decode(errors="replace").partition("|")
    return (task_id, token) if sep and task_id and token else None


def ahead_value(leases: Iterable[Lease]) -> str:
    """A pool child's field of ``ahead:<worker>``: the leases of its batch that may not
    have started, as lease members separated by spaces (ack.lua writes the same)."""
    return " ".join(lease_member(lease.task_id, lease.token) for lease in leases)


def parse_ahead(values: Iterable[bytes]) -> list[tuple[str, str]]:
    """The (task id, token) pairs of the fields of ``ahead:<worker>``."""
    return [p for value in values for member in value.split()
            if (p := parse_lease_member(member)) is not None]


@dataclass(frozen=True)
class Offer:
    """The dispatcher's standing offer for one queue, the value of ``offer:<queue>``: the
    workers, best hosts first, that a small submit to the queue leases its tasks to itself
    (submit_small.lua takes the least loaded with free slots), while the queue is empty.

    ``others`` are those workers' other queues: a task waiting in one of them comes first.
    """

    epoch: str  # of the leader that made the offer: a new leader's offers replace it
    # (worker id, capacity, what its host adds to its load: scheduling.host_load)
    workers: tuple[tuple[str, int, float], ...]
    others: tuple[str, ...] = ()

    def encode(self) -> bytes:
        return codec.pack([self.epoch, [list(w) for w in self.workers], list(self.others)])


def parse_offer(raw: bytes) -> Offer | None:
    """Read an offer; None when it is not one (the submit then goes the usual way)."""
    try:
        epoch, workers, others = codec.unpack(raw)
        return Offer(str(epoch), tuple((str(w), int(c), float(h)) for w, c, h in workers),
                     tuple(str(q) for q in others))
    except (codec.CodecError, TypeError, ValueError):
        return None
