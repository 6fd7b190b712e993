"""What ``balancer status`` shows: the leader, workers with their load, queues with their
depth, tag limits with the leases counted against them, recent flow runs, entries the
dispatcher set aside. Read-only; gathered in a few pipelined round trips. A bad entry (a
queue key of the wrong type, a queue name that is not UTF-8, a setting that is not a
number) shows where it is, never fails the command."""

from __future__ import annotations

import dataclasses
import fnmatch
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from balancer import why
from balancer.common import aside, clusterfacts, protocol, signals
from balancer.common.connection import server_time_ms
from balancer.common.eviction import Eviction, read_policy
from balancer.common.keys import Keys
from balancer.common.keytypes import WrongType, describe, is_wrong_type, wrong_fixed_types
from balancer.common.models import QueueConfig, WorkerInfo
from balancer.common.replies import as_bytes_list
from balancer.common.settings import Settings
from balancer.scheduling import WorkerView, load
from balancer.taglimits import TagLimit, limit_rows, merge_rows, table


@dataclass
class WorkerRow:
    id: str
    queues: list[str]
    capacity: int
    leased: int
    running: int
    cpu: float
    pressure: float
    memory: float
    load: float
    host: str
    pid: int
    pool: str
    last_seen_s: float
    alive: bool
    stuck: int = 0  # task threads given up that do not stop (WorkerInfo.stuck)
    release: str = ""  # its release ("" for one from before releases were reported)
    protocol: int = 0  # the version of the formats it reads (common/protocol.py)
    beat_s: float = 0.0  # how often it says it beats (0: not said)

    @property
    def foreign(self) -> bool:
        """It runs a release whose formats differ from this code's: a dispatcher of this
        release leases it nothing."""
        return protocol.other_release(self.protocol)


@dataclass
class QueueRow:
    name: str
    priority: int
    concurrency_limit: int | None
    paused: bool
    ready: int
    inflight: int | None  # leased now; counted only for queues with a concurrency limit
    held_by: str | None = None  # why its ready tasks wait, when they do
    # The workers a small submit to it leases to itself, best hosts first (the standing
    # offer of the current leader); empty when none stands.
    offered_to: list[str] = field(default_factory=list)
    # With prefetch, a submit of one task may also take a place behind their running
    # tasks, up to this many per slot (common/signals.py: Offer); 1: free slots only.
    offer_depth: int = 1


@dataclass
class FlowRow:
    id: str
    name: str
    state: str
    total: int
    remaining: int
    failed: int
    created: float
    cancelled: int = 0
    run_name: str = ""  # its own name (a @flow's flow_run_name), "" when none


@dataclass
class Status:
    leader: str | None
    workers: list[WorkerRow]
    queues: list[QueueRow]
    flows: list[FlowRow]
    delayed: int
    dead_letters: int
    # Bad entries the dispatcher set aside (common.aside rows): `balancer dlq aside`.
    set_aside: list[dict[str, Any]] = field(default_factory=list)
    tags: list[TagLimit] = field(default_factory=list)  # limited, or with leases counted
    # With several partitions: each one's leader, by partition (``leader`` is partition 0's).
    leaders: list[str | None] = field(default_factory=list)
    # Dispatchers heard from within 3 leader ttls (leaders and standbys), newest first.
    dispatchers: list[DispatcherRow] = field(default_factory=list)
    # Redis's maxmemory policy (common/eviction.py); None when it cannot be read.
    eviction: Eviction | None = None
    # Fixed keys read as empty for holding another type.
    wrong_keys: list[WrongType] = field(default_factory=list)
    # What the dispatcher leading partition 0 stored of itself (common/protocol.py); None:
    # nothing stored (no leader yet, or one of a release from before stamps).
    stamp: protocol.Stamp | None = None

    @property
    def standbys(self) -> list[DispatcherRow]:
        """The dispatchers heard from that lead no partition: who takes over."""
        leading = {leader.partition("|")[2] for leader in self.leaders or [self.leader]
                   if leader}
        return [row for row in self.dispatchers if row.id not in leading]

    @property
    def eviction_warning(self) -> str | None:
        """What Redis's maxmemory policy may delete of ours, for an operator; None when
        it deletes nothing or cannot be read."""
        return self.eviction.warning if self.eviction is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "standbys": [asdict(row) for row in self.standbys],
                "stamp": self.stamp._asdict() if self.stamp is not None else None,
                "eviction_warning": self.eviction_warning}


def _int(raw: bytes | None) -> int:
    return int(raw) if raw else 0


def _or(reply: Any, default: Any) -> Any:
    """A pipeline reply, or ``default`` where it is an error (a key of the wrong type)."""
    return default if isinstance(reply, Exception) else reply


def _empties() -> tuple[Any, ...]:
    """What each read of ``gather``'s first round trip gives for a key that holds another
    type (made anew: the caller may keep them)."""
    return (None, [], set(), {}, [], 0, 0, {}, {}, {})


def _typed(reply: Any, empty: Any) -> Any:
    """A reply, or ``empty`` where its key holds another type (WRONGTYPE); any other
    error reply (a refusal: NOPERM) is raised."""
    if isinstance(reply, Exception):
        if is_wrong_type(reply):
            return empty
        raise reply
    return reply


DEFAULT_LEADER_TTL = Settings.leader_ttl


@dataclass
class DispatcherRow:
    id: str
    seen_s: float  # since it last led or tried for the lease (every dispatcher tick)


def _heard(entries: list[tuple[bytes, float]], now_ms: float) -> list[DispatcherRow]:
    """The ``dispatchers`` zset's members read (an unreadable one skipped), newest first."""
    rows = []
    for member, score in entries:
        try:
            dispatcher = member.decode()
        except UnicodeDecodeError:
            continue
        rows.append(DispatcherRow(dispatcher, round(max(0.0, now_ms - score) / 1000, 1)))
    return sorted(rows, key=lambda row: row.seen_s)


def gather(client: redis.Redis, keys: Keys, recent: int = 10,
           leader_ttl: float = DEFAULT_LEADER_TTL) -> Status:
    now_ms = server_time_ms(client, keys.workers)
    pipe = client.pipeline(transaction=False)
    pipe.get(keys.leader)
    pipe.zrange(keys.workers, 0, -1, withscores=True)
    pipe.smembers(keys.queues)
    pipe.hgetall(keys.inflight)
    pipe.zrevrange(keys.flows, 0, recent - 1)
    pipe.zcard(keys.delayed)
    pipe.zcard(keys.dlq)
    pipe.hgetall(keys.aside)
    pipe.hgetall(keys.tag_limits)
    pipe.hgetall(keys.tag_inflight)
    # A fixed key of another type (a Redis writer's) reads as empty here, never fails the
    # command: the dispatcher reports it among the entries set aside.
    replies = pipe.execute(raise_on_error=False)
    wrong_keys = wrong_fixed_types(client, keys) if any(map(is_wrong_type, replies)) else []
    (leader, workers, queue_names, inflight, flow_ids, delayed, dead, set_aside, tag_limits,
     tag_leased) = (_typed(reply, empty) for reply, empty in zip(replies, _empties()))
    queue_names = sorted(aside.readable(queue_names))
    worker_ids = [(m.decode(), score) for m, score in workers]
    flow_ids = [f.decode() for f in flow_ids]

    pipe = client.pipeline(transaction=False)
    for wid, _ in worker_ids:
        pipe.hget(keys.worker(wid), "info")
        pipe.scard(keys.leases(wid))
    for q in queue_names:
        pipe.zcard(keys.queue(q))
        pipe.hgetall(keys.queue_conf(q))
        pipe.get(keys.offer(q))
    for f in flow_ids:
        pipe.hmget(keys.flow(f), FLOW_FIELDS)
    pipe.zrangebyscore(keys.dispatchers, now_ms - 3000 * leader_ttl, "+inf", withscores=True)
    replies = pipe.execute(raise_on_error=False)
    heard = _or(replies.pop(), [])  # a key of the wrong type: no dispatcher shown

    # What holds each queue is judged on these same reads, not on a second pass.
    facts = why.ClusterFacts(leader=leader.decode() if leader else None,
                             inflight={k.decode(): int(v) for k, v in inflight.items()})
    rows: list[WorkerRow] = []
    for i, (wid, score) in enumerate(worker_ids):
        blob, leased = _or(replies[2 * i], None), int(_or(replies[2 * i + 1], 0))
        info = WorkerInfo.readable(blob)
        if info is None:  # none (its record expired), or unreadable: shown as silent
            blob, info = None, WorkerInfo(wid, (), 0)
        if blob is not None:
            facts.workers.append(info)
            facts.leased[info.id] = leased
        view = WorkerView(wid, frozenset(info.queues), info.capacity, leased, info.pressure,
                          info.memory)
        rows.append(WorkerRow(
            id=wid, queues=list(info.queues), capacity=info.capacity, leased=leased,
            running=info.running, cpu=info.cpu, pressure=info.pressure, memory=info.memory,
            load=round(load(view), 3) if info.capacity else float("inf"), host=info.host,
            pid=info.pid, pool=info.pool, last_seen_s=round((now_ms - score) / 1000, 1),
            alive=blob is not None, stuck=info.stuck, release=info.release, beat_s=info.beat_s,
            protocol=info.protocol if blob is not None else protocol.VERSION))
    offset = 2 * len(worker_ids)
    queue_rows = []
    epoch = facts.leader.split("|", 1)[0] if facts.leader else None
    for j, q in enumerate(queue_names):
        depth, conf, raw = replies[offset + 3 * j: offset + 3 * j + 3]
        c = facts.configs[q] = QueueConfig.from_hash(q, _or(conf, {}))
        offer = signals.parse_offer(raw) if _or(raw, None) else None
        if offer is not None and offer.epoch != epoch:
            offer = None  # an old leader's: no submit takes it
        hold = (f"its key cannot be read: {depth}" if isinstance(depth, Exception)
                else why.queue_hold(q, facts) if depth else None)
        queue_rows.append(QueueRow(q, c.priority, c.concurrency_limit, c.paused,
                                   _or(depth, 0),
                                   facts.inflight.get(q, 0) if c.concurrency_limit else None,
                                   hold,
                                   [w[0] for w in offer.workers] if offer else [],
                                   offer.depth if offer else 1))
    offset += 3 * len(queue_names)
    flows = _flow_rows(flow_ids, replies[offset:offset + len(flow_ids)])
    return Status(leader.decode() if leader else None, rows, queue_rows, flows, int(delayed),
                  int(dead), aside.rows(set_aside),
                  limit_rows(tag_limits, tag_leased), dispatchers=_heard(heard, now_ms),
                  wrong_keys=wrong_keys)


def gather_all(client: redis.Redis, keys: list[Keys], recent: int = 10,
               leader_ttl: float = DEFAULT_LEADER_TTL) -> Status:
    """``gather`` over every partition (``keys``, one per partition), merged: a worker's
    leases and a queue's depths summed over the partitions, the newest flow runs of all."""
    views = [gather(client, k, recent, leader_ttl) for k in keys]
    policy = read_policy(client)  # the server's: one read, whatever the partitions
    stamp = clusterfacts.read_now(client, keys[0]).stamp
    if len(views) == 1:
        return dataclasses.replace(views[0], eviction=policy, stamp=stamp)
    workers: dict[str, WorkerRow] = {}
    queues: dict[str, QueueRow] = {}
    for view in views:
        for w in view.workers:
            seen = workers.get(w.id)
            if seen is None:
                workers[w.id] = dataclasses.replace(w)
            else:
                seen.leased += w.leased
                seen.alive = seen.alive and w.alive
        for q in view.queues:
            had = queues.get(q.name)
            if had is None:
                queues[q.name] = dataclasses.replace(q)
                continue
            had.ready += q.ready
            if had.inflight is not None and q.inflight is not None:
                had.inflight += q.inflight
            had.held_by = had.held_by or q.held_by
    flows = sorted((f for view in views for f in view.flows), key=lambda f: -f.created)
    first = views[0]
    return Status(first.leader, sorted(workers.values(), key=lambda w: w.id),
                  sorted(queues.values(), key=lambda q: q.name), flows[:recent],
                  sum(v.delayed for v in views), sum(v.dead_letters for v in views),
                  [row for v in views for row in v.set_aside],
                  merge_rows([v.tags for v in views]), [v.leader for v in views],
                  first.dispatchers,  # serves register in partition 0
                  policy, [w for v in views for w in v.wrong_keys], stamp)


# "open": a @flow function's run while its function runs, which holds one more count in
# remaining than it has tasks left (balancer/dynamic.py).
FLOW_FIELDS = ["name", "state", "total", "remaining", "failed", "created", "cancelled", "open",
               "run_name"]


def _flow_rows(flow_ids: list[str], records: list[Any]) -> list[FlowRow]:
    rows = []
    for f, record in zip(flow_ids, records):
        (name, state, total, remaining, failed, created, cancelled,
         is_open, run_name) = _or(record, [None] * len(FLOW_FIELDS))
        if name is None:
            continue  # expired
        left = _int(remaining) - (1 if is_open == b"1" else 0)
        rows.append(FlowRow(f, name.decode(), state.decode(), _int(total), left,
                            _int(failed), _int(created) / 1000, _int(cancelled),
                            (run_name or b"").decode(errors="replace")))
    return rows


@dataclass(frozen=True)
class FlowFilter:
    """Which runs ``balancer flows`` lists: in ``state``, and named as ``name`` (a glob,
    ``etl*``, over the flow's name and the run's own); None: any."""

    state: str | None = None
    name: str | None = None

    def __bool__(self) -> bool:
        return self.state is not None or self.name is not None

    def keeps(self, row: FlowRow) -> bool:
        return ((self.state is None or row.state == self.state)
                and (self.name is None or fnmatch.fnmatchcase(row.name, self.name)
                     or (bool(row.run_name) and fnmatch.fnmatchcase(row.run_name, self.name))))


FLOWS_PAGE = 200  # index entries read per round trip while a filter looks for matches


def recent_flows(client: redis.Redis, keys: Keys, n: int,
                 only: FlowFilter | None = None) -> list[FlowRow]:
    """The ``n`` latest flow runs, newest first (``balancer flows``), of those ``only``
    keeps: read page by page down the index of recent runs (``RECENT_FLOWS`` of them, the
    latest first) until ``n`` are found; runs whose records expired are passed over."""
    only = only or FlowFilter()
    rows: list[FlowRow] = []
    page = max(n, FLOWS_PAGE) if only else n
    start = 0
    while len(rows) < n:
        flow_ids = [f.decode() for f in
                    as_bytes_list(client.zrevrange(keys.flows, start, start + page - 1))]
        if not flow_ids:
            break
        pipe = client.pipeline(transaction=False)
        for f in flow_ids:
            pipe.hmget(keys.flow(f), FLOW_FIELDS)
        rows += [row for row in _flow_rows(flow_ids, pipe.execute()) if only.keeps(row)]
        start += page
    return rows[:n]


def recent_flows_all(client: redis.Redis, keys: list[Keys], n: int,
                     only: FlowFilter | None = None) -> list[FlowRow]:
    """``recent_flows`` over every partition, newest first."""
    rows = [row for k in keys for row in recent_flows(client, k, n, only)]
    return sorted(rows, key=lambda f: -f.created)[:n] if len(keys) > 1 else rows


def flow_lines(flows: list[FlowRow]) -> list[str]:
    lines = []
    for f in flows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(f.created))
        name = f"{f.name} ({f.run_name})" if f.run_name else f.name
        lines.append(f"  {f.id}  {name:<24} {f.state:<10} {f.total - f.remaining}/{f.total}"
                     f" done, {f.failed} failed"
                     + (f", {f.cancelled} cancelled" if f.cancelled else "") + f"  {when}")
    return lines


def render(status: Status) -> str:
    lines = [f"leader: {status.leader or 'none (is `balancer serve` running?)'}", ""]
    if len(status.leaders) > 1:
        lines[0:1] = [f"leader of partition {p}: {leader or 'none'}"
                      for p, leader in enumerate(status.leaders)]
    if status.stamp is not None:
        lines[0] += f" (release {status.stamp.release}, protocol {status.stamp.version})"
        if protocol.other_release(status.stamp.version):
            lines.insert(1, f"WARNING: this code runs release {protocol.release()} (protocol"
                            f" {protocol.VERSION}): clients of its release refuse to submit"
                            " to this cluster, and its workers are leased nothing")
    standing = ", ".join(f"{row.id} (seen {row.seen_s:g}s ago)" for row in status.standbys)
    lines.insert(-1, "standby dispatchers: " + (standing or "none (a second `balancer serve`"
                                                 " stands by to take over if the leader stops)"))
    if status.eviction_warning:
        lines.insert(-1, "WARNING: " + status.eviction_warning)
    if status.wrong_keys:
        lines.insert(-1, "WARNING: read as empty here: " + describe(status.wrong_keys))
    lines.append(f"workers ({len(status.workers)}):")
    lines.append(f"  {'id':<28} {'queues':<24} {'slots':>9} {'load':>6} {'cpu':>5} {'mem':>5}"
                 f" {'seen':>6}")
    for w in status.workers:
        state = "" if w.alive else "  (silent: will be reaped)"
        if w.stuck:  # given up past a timeout or cancel, inside a call that never returns
            state += f"  (stuck task threads: {w.stuck})"
        if w.foreign:
            state += (f"  (release {w.release or 'older'}, protocol {w.protocol}; this one's"
                      f" {protocol.VERSION}: a dispatcher of this release leases it nothing)")
        # Spaces between the names: a queue's name holds none, where it may hold a comma.
        lines.append(f"  {w.id:<28} {' '.join(w.queues):<24} {w.leased:>4}/{w.capacity:<4}"
                     f" {w.load:>6.2f} {w.cpu:>5.0%} {w.memory:>5.0%} {w.last_seen_s:>5}s{state}")
    lines += ["", f"queues ({len(status.queues)}):",
              f"  {'name':<24} {'priority':>8} {'ready':>7} {'leased':>7} {'limit':>6}  state"]
    for q in status.queues:
        limit = "-" if q.concurrency_limit is None else str(q.concurrency_limit)
        leased = "-" if q.inflight is None else str(q.inflight)
        lines.append(f"  {q.name:<24} {q.priority:>8} {q.ready:>7} {leased:>7} {limit:>6}"
                     f"  {'paused' if q.paused else 'active'}")
        if q.held_by:
            lines.append(f"      waiting: {q.held_by}")
        if q.offered_to:
            behind = (f" (one task also behind their running ones, up to {q.offer_depth} per"
                      " slot)" if q.offer_depth > 1 else "")
            lines.append(f"      a small submit goes at once to: {', '.join(q.offered_to)}"
                         f"{behind}")
    if status.tags:
        lines += ["", f"tag limits ({len(status.tags)}):", *table(status.tags, "  ")]
    lines += ["", f"delayed (retries, later starts): {status.delayed}"
                  f"   quarantined: {status.dead_letters}   set aside: {len(status.set_aside)}"]
    for entry in status.set_aside:
        lines.append(f"  {entry['id']}  {entry['kind']:<12} {entry['key']}  {entry['detail']}")
    if status.set_aside:
        lines.append("  (balancer dlq aside: the entries as they were; dlq dismiss ID)")
    lines += ["", f"recent flow runs ({len(status.flows)}):", *flow_lines(status.flows)]
    return "\n".join(lines)


