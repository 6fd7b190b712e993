"""Short messages on the ``wake`` list that tell the dispatcher something changed.

The dispatcher BLPOPs the list instead of polling. Signals are hints: losing one costs
a little latency, never a task, because an idle dispatcher reads the queues again every
few seconds (``balancer.dispatcher.IDLE_RECHECK``) and a new leader reads everything.
The Lua scripts write the same formats; this module is the only Python that reads them.

    s[|<queue> <queue>...]    tasks were submitted (to those queues), or those queues got
                              work (an ack's dependents, a task put back); with no queue
                              named, any queue may have: the dispatcher reads them all
    S|<queue>|<id>,<id>...    a small submit made these tasks of one queue ready (and no
                              other): an idle dispatcher leases them without reading it
    r                         a retry was scheduled in ``delayed``
    a|<worker>|<n>            a worker finished tasks and holds n leases now; tasks may have
                              been queued anywhere (sent by workers of earlier releases only)
    k|<worker>|<n>            the same, and nothing was queued but what an ``s`` names
    l|<worker>|<n>            a submit took the worker's standing offer: it holds n now
    h|<worker>|<leased>|<hb>  heartbeat: tasks leased to it now, then the msgpack WorkerInfo
    x|<worker>                a worker deregistered: reap it now
    q                         a queue's configuration changed
    c                         failed tasks wait in ``cascade`` for their dependents to fail
    t                         a schedule was added or changed: read the due times again
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from balancer.common import codec, prefetch, protocol

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
SCHEDULES = "t"

# The signals the Lua scripts push, by the names _prelude.lua's SIGNAL table gives them
# (a test checks that table against this one: a script pushes only what ``parse`` reads).
LUA_KINDS = {"submitted": SUBMITTED, "retry": RETRY, "ack": ACK, "settled": SETTLED,
             "offer_taken": OFFER_TAKEN, "heartbeat": HEARTBEAT, "cascade": CASCADE,
             "queues": QUEUES, "schedules": SCHEDULES}


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


def acked(worker: str, held: int, queued: bool = True) -> str:
    """An ack's signal (ack.lua, fail.lua and cancel.lua build the ``queued=False`` one;
    ``queued``, an ack of a worker of an earlier release)."""
    return f"{ACK if queued else SETTLED}|{worker}|{held}"


def heartbeat(worker: str, leased: int, blob: bytes) -> bytes:
    """A full heartbeat's signal (heartbeat.lua builds the same)."""
    return f"{HEARTBEAT}|{worker}|{leased}|".encode() + blob


def offer_taken(worker: str, held: int) -> str:
    """A submit took the worker's standing offer (submit_small.lua builds the same)."""
    return f"{OFFER_TAKEN}|{worker}|{held}"


def gone(worker: str) -> str:
    """A worker deregistered: the dispatcher reaps it at once."""
    return f"{GONE}|{worker}"


class Pushes(Protocol):
    """What a signal is pushed through: a redis-py client or pipeline."""

    def execute_command(self, *args: Any, **options: Any) -> Any: ...


def push(pipe: Pushes, wake_key: str, raw: str | bytes) -> None:
    """Queue a signal for the dispatcher (on a pipeline: in its round trip), keeping the
    wake list within WAKE_CAP as the scripts do (signal_capped in _prelude.lua): while no
    dispatcher reads it, every submit and every queue change would otherwise lengthen it
    for good."""
    for command in pushed(wake_key, raw):
        pipe.execute_command(*command)


def pushed(wake_key: str, raw: str | bytes) -> list[tuple[str | int | bytes, ...]]:
    """``push``'s commands, for a caller that packs its own (``Scripts.transaction``)."""
    return [("RPUSH", wake_key, raw), ("LTRIM", wake_key, -protocol.WAKE_CAP, -1)]


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
        if k in (RETRY, QUEUES, CASCADE, SCHEDULES):
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

    Written by lease_tasks (_prelude.lua) as ``id|token|`` followed by length-prefixed
    fields (``<len>:<bytes>``): queue, flow, timeout, fn, name, children, args, then the
    optional ones: sig, depth, ready (an entry older than signing ends at args, one older
    than depths at sig, one older than events at depth). A named tuple, not a frozen
    dataclass: one is made per task, and it costs a quarter as much to make.
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
    # Tasks per slot the dispatcher prefetches for its queue (common/prefetch.py): how
    # many a pool child takes at once. 1 when the lease does not say (an older entry, or a
    # standing offer taken by a submit).
    depth: int = 1
    # When the task became ready (Redis ms; 0: not told), for its wait time in the events.
    ready_ms: int = 0
    # The partition whose inbox it came from (common/partitions.py): where its task's keys
    # are, and where it is acknowledged. Set by the worker that took it, never written.
    partition: int = 0

    @property
    def suspect(self) -> bool:
        """Held ahead by a worker that died: its start is told to Redis (see reap.lua)."""
        return protocol.is_suspect(self.token)

    @property
    def member(self) -> str:
        return lease_member(self.task_id, self.token)


LEASE_FIELDS = 7  # then the optional ones: the signature (since signing), the depth,
LEASE_OPTIONAL = 3  # when the task became ready


def _ms(raw: bytes) -> int:
    """A time in ms that is only shown (a wait time): 0 when unreadable, never an error
    that would drop the lease."""
    try:
        return int(float(raw)) if raw else 0
    except (ValueError, OverflowError):
        return 0


def parse_lease(raw: bytes) -> Lease | None:
    """Read one inbox entry; None when it is not one (it is logged by the caller). On
    every task's way to its start: few calls (a call per field cost a fifth of it)."""
    try:
        task_id, token, rest = raw.split(b"|", 2)
        fields: list[bytes] = []
        pos, end = 0, len(rest)
        for _ in range(LEASE_FIELDS + LEASE_OPTIONAL):  # bounded, whatever was written
            if pos == end:
                break
            colon = rest.index(b":", pos)
            start = colon + 1
            stop = start + int(rest[pos:colon])
            if stop < start or stop > end:
                return None
            fields.append(rest[start:stop])
            pos = stop
        if pos != end or len(fields) < LEASE_FIELDS:
            return None
        queue, flow, timeout, fn, name, children, args, *optional = fields
        sig = optional[0] if optional else b""
        depth = int(optional[1]) if len(optional) > 1 and optional[1] else 1
        ready = _ms(optional[2]) if len(optional) > 2 else 0
        return Lease(task_id.decode(), token.decode(), queue.decode(), flow.decode(),
                     float(timeout) if timeout else None, fn.decode(), name.decode(),
                     children, args, raw, sig, max(1, depth), ready)
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


def entry_member(raw: bytes) -> bytes:
    """The leases-set member an inbox entry stands for: its first two fields, "task|token"
    (take_held in common/lua/_prelude.lua reads it the same way)."""
    return b"|".join(raw.split(b"|", 2)[:2])


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
    (submit_small.lua takes the least loaded with room), while the queue is empty.

    Room is a free slot for each task. A submit of one task may also take one of a
    worker's ``places``: with prefetch (``depth`` > 1, common/prefetch.py), a busy worker
    takes it behind what it runs, as the dispatcher would lease it (``offered_places``),
    instead of its going through the dispatcher. The dispatcher offers places only when
    the offer names every worker serving the queue: a task then waits behind another only
    when no worker has a free slot.

    ``others`` are those workers' other queues: a task waiting in one of them comes first.
    """

    epoch: str  # of the leader that made the offer: a new leader's offers replace it
    # (worker id, capacity, what its host adds to its load: scheduling.host_load, places:
    # the leases it may hold in all after taking one task, at least its capacity)
    workers: tuple[tuple[str, int, float, int], ...]
    others: tuple[str, ...] = ()
    depth: int = 1  # the queue's prefetch per slot: the places, and a placed lease's entry

    def encode(self) -> bytes:
        return codec.pack([self.epoch, [list(w) for w in self.workers], list(self.others),
                           self.depth])


def parse_offer(raw: bytes) -> Offer | None:
    """Read an offer; None when it is not one (the submit then goes the usual way). An
    offer written before places and depths gives each worker its capacity, no prefetch."""
    try:
        epoch, workers, others, *more = codec.unpack(raw)
        depth = int(more[0]) if more else 1
        offered = []
        for w, c, h, *places in workers:
            capacity = int(c)
            room = int(places[0]) if places else capacity
            if not capacity <= room <= capacity * depth:
                return None
            offered.append((str(w), capacity, float(h), room))
        if not 1 <= depth <= prefetch.PREFETCH_MAX:
            return None
        return Offer(str(epoch), tuple(offered), tuple(str(q) for q in others), depth)
    except (codec.CodecError, TypeError, ValueError):
        return None
