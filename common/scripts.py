"""Typed wrappers around the Lua scripts in ``common/lua``: the only way code changes state.

Each script runs by EVALSHA (sent as EVAL once after a server restart lost it), and every
key it touches is passed through KEYS, built by ``Keys``.

Scripts are the hot path of every task (a worker's ack, the dispatcher's lease), so each
thread calls them on a connection of its own (``connection.Direct``).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property, partial
from itertools import chain
from typing import Any, Literal, NamedTuple

import redis
from balancer.common import codec, events, luasource, signals
from balancer.common.connection import Direct, server_time_ms
from balancer.common.keys import Keys
from balancer.common.redisclock import RedisClock
from balancer.common.settings import Settings
from balancer.common.signals import Offer

log = logging.getLogger("worker")

FailMode = Literal["retry", "final", "crash", "quarantine", "skip", "again"]
FAIL_REFUSED, FAIL_FAILED, FAIL_RETRIED, FAIL_QUARANTINED, FAIL_SKIPPED = 0, 1, 2, 3, 4
# flow_extend.lua's refusals: the run is closed (its function returned), or cancelled.
EXTEND_CLOSED, EXTEND_CANCELLED = -1, -2
GateMode = Literal["queue", "skip", "fail", "expand", "gather"]
SUMMARY_CHARS = 300  # of an error, in a failure's event
# The leases a fetch's plain check of one entry reads (``take_one_commands``): all of the
# worker's while it holds at most this many, else a sample of one more.
TAKE_ONE_LEASES = 64


def dropped(worker_id: str, entries: Sequence[bytes]) -> None:
    """Log inbox entries dropped because the worker holds no lease for them."""
    for entry in entries:
        log.error("worker=%s dropped an inbox entry that holds no lease (never run): %r",
                  worker_id, bytes(entry[:80]))


_unreplicated_warned = threading.Event()


def _unreplicated(worker_id: str, acked: int, durability: Durability) -> None:
    """An acknowledgement too few replicas confirmed: it stands on the master (a task whose
    acknowledgement a failover loses runs again: at-least-once). Said once per process."""
    if not _unreplicated_warned.is_set():
        _unreplicated_warned.set()
        log.warning("worker=%s: an acknowledgement was confirmed by %d of %d replicas within"
                    " %d ms (BALANCER_MIN_REPLICAS); acknowledgements go on (said once)",
                    worker_id, acked, durability.replicas, durability.timeout_ms)


@cache
def _sha(name: str) -> str:
    """The script's SHA1, as EVALSHA names it."""
    return hashlib.sha1(luasource.source(name).encode()).hexdigest()


def _evalsha(name: str, keys: Sequence[str], args: Sequence[Any]) -> tuple[Any, ...]:
    """The script ``name`` as a command (a server without it replies NOSCRIPT)."""
    return ("EVALSHA", _sha(name), len(keys), *keys, *args)


class SlotsTaken(NamedTuple):
    """slots_take.lua's answer: ``code`` 1 taken, 0 no room now, -1 never, -2 no decay;
    ``detail`` the names taken, or the name that answered; ``frees_in_ms`` (no room)
    when the first of that name's rate_limit slots has decayed, -1 when it holds none."""

    code: int
    detail: str | int
    frees_in_ms: int = -1


@dataclass(frozen=True)
class Child:
    """A dependent of a task: completing the task may queue it at ``score`` in ``queue``,
    or, ``gated`` (a map, a trigger), put it in the gate for the dispatcher to decide."""

    task_id: str
    queue: str
    score: float
    gated: bool = False


@dataclass(frozen=True)
class Expansion:
    """A map's children, as gate.lua expands them: their ids (records written), and the
    map's new list of dependents (packed; b"": unchanged) when maps expanded item by item
    with it were taken out of it."""

    map_id: str
    children: Sequence[str]
    dependents: bytes = b""
    nchildren: int = 0


@dataclass(frozen=True)
class Done:
    """A successful run, as the worker acknowledges it."""

    task_id: str
    token: str
    queue: str
    flow_id: str
    started_ms: int
    result: bytes
    has_deadline: bool = False
    children: Sequence[Child] = field(default_factory=tuple)
    name: str = ""  # for the task.completed event
    ready_ms: int = 0  # when it became ready (0: not known), for its wait time


@dataclass(frozen=True)
class CancelTask:
    """A task of a flow being cancelled, with the lease its caller saw (token "": none)."""

    task_id: str
    queue: str
    token: str = ""
    worker: str = ""
    inbox_entry: bytes = b""
    mapped: str = ""  # a map's count of children as the caller saw it ("": not expanded)


@dataclass(frozen=True)
class CancelReply:
    """What ``cancel.lua`` did: the flow's state after it (``missing``: no such flow),
    how many tasks it cancelled, the workers whose leases it took back; or, in ``retry``,
    tasks that were leased after the caller looked (nothing was written)."""

    state: str
    cancelled: int = 0
    workers: tuple[str, ...] = ()
    retry: tuple[str, ...] = ()


@dataclass(frozen=True)
class Lead:
    """The leader lease as ``leader.lua`` answers: the token we hold (None: another
    dispatcher leads), and what the epoch key held if it was no counter and a new epoch
    was taken instead (None when it was fine)."""

    token: str | None
    bad_epoch: bytes | None = None


@dataclass(frozen=True)
class ScheduledRun:
    """A run of a schedule as ``schedule_fire.lua`` writes it: the flow's record, each
    task's by id, and per queue the ready tasks (id -> score), every queue touched listed."""

    flow_id: str
    flow: Mapping[str, Any]
    tasks: Mapping[str, Mapping[str, Any]]
    queues: Mapping[str, Mapping[str, float]]
    signal: str
    recent: int
    gate: Mapping[str, float] = field(default_factory=dict)  # gated tasks, no upstream


@dataclass(frozen=True)
class LeasedTask:
    """A leased task the reaper or its worker takes back."""

    task_id: str
    queue: str
    token: str
    started: bool = False
    ahead: bool = False  # in a pool child's batch after its first: perhaps started
    inbox_entry: bytes = b""


@dataclass(frozen=True)
class Durability:
    """Wait, after a submit or an acknowledgement, until ``replicas`` replicas hold it
    (Redis's WAIT, up to ``timeout_ms``), so that a failover does not lose it. Redis
    replicates asynchronously: without this, what the master accepted in its last moments
    may never reach the replica that takes over. 0 replicas: no wait."""

    replicas: int = 0
    timeout_ms: int = 1000


def durability(settings: Settings) -> Durability:
    """What ``settings`` ask of submits and acknowledgements."""
    return Durability(settings.min_replicas, max(1, int(settings.replica_timeout * 1000)))


class NotReplicated(redis.RedisError):
    """A write reached the master, but fewer replicas than asked confirmed it in time: a
    failover now could lose it."""

    def __init__(self, what: str, acked: int, wanted: int, timeout_ms: int,
                 lost: bool = False) -> None:
        self.acked = acked
        self.wanted = wanted
        said = (f"its connection was lost before the {wanted} replicas asked for"
                " (BALANCER_MIN_REPLICAS) could confirm it" if lost else
                f"{acked} of the {wanted} replicas asked for (BALANCER_MIN_REPLICAS)"
                f" confirmed it within {timeout_ms} ms")
        super().__init__(f"{what}: written to the Redis master, but {said}: a failover now"
                         " could lose it")


@dataclass(frozen=True)
class AddedTask:
    """A task a @flow function adds to its open run: its record's fields, the queue it
    goes to, its score there (None: it waits for upstream tasks) and its listing entry."""

    task_id: str
    queue: str
    score: float | None
    listing: bytes
    fields: Mapping[str, Any]


class Scripts:
    def __init__(self, client: redis.Redis, keys: Keys,
                 events_config: events.Config | None = None,
                 durability: Durability | None = None) -> None:
        self.client = client
        self.keys = keys
        # What the scripts write to the events stream (BALANCER_EVENTS_MAX and
        # BALANCER_TASK_EVENTS of this process).
        self.events = events_config or events.Config()
        self.durability = durability or Durability()
        self._local = threading.local()  # .direct: this thread's connection
        # The last offer submit_small took: (queue, offer, its keys, its arguments).
        self._offer_cache: tuple[str, Offer, list[str], list[Any]] | None = None

    @classmethod
    def for_settings(cls, client: redis.Redis, keys: Keys, settings: Settings) -> Scripts:
        """Scripts that write events and wait for replicas as ``settings`` ask."""
        return cls(client, keys, events.Config.from_settings(settings), durability(settings))

    def _direct(self) -> Direct:
        direct = getattr(self._local, "direct", None)
        if direct is None:
            direct = self._local.direct = Direct(self.client, route=self.keys.wake)
        return direct

    def _run(self, name: str, keys: Sequence[str], args: Sequence[Any]) -> Any:
        direct = self._direct()
        try:
            return direct.call(*_evalsha(name, keys, args))
        except redis.exceptions.NoScriptError:  # a new or restarted server
            return direct.call("EVAL", luasource.source(name), len(keys), *keys, *args)

    def _run_durable(self, name: str, keys: Sequence[str], args: Sequence[Any]
                     ) -> tuple[Any, int]:
        """``_run``, then WAIT for the replicas ``durability`` asks for, in the same round
        trip on the same connection (WAIT counts what that connection wrote): (the
        script's reply, replicas that confirmed; ``durability.replicas`` when none asked)."""
        wanted = self.durability.replicas
        if wanted <= 0:
            return self._run(name, keys, args), 0
        wait = ("WAIT", wanted, self.durability.timeout_ms)
        direct = self._direct()
        reply, acked = direct.calls(_evalsha(name, keys, args), wait)
        if isinstance(reply, redis.exceptions.NoScriptError):  # a new or restarted server
            reply, acked = direct.calls(
                ("EVAL", luasource.source(name), len(keys), *keys, *args), wait)
        for item in (reply, acked):
            if isinstance(item, Exception):
                raise item
        return reply, int(acked)

    def note(self, *commands: tuple[Any, ...]) -> None:
        """Send writes on this thread's connection without waiting for their replies (the
        next call reads them first): notes whose loss the reader tolerates, to keys of
        the same server (a Redis Cluster: of this partition's slot)."""
        direct = self._direct()
        for command in commands:
            direct.send(*command)

    def confirm(self, key: str, field: str, value: str, what: str) -> None:
        """After a write made on another connection (a MULTI/EXEC pipeline): write ``field``
        of the hash ``key`` on this thread's connection and WAIT for the replicas
        ``durability`` asks for. Replication keeps the order of writes, so replicas that
        hold this one hold everything written before it. NotReplicated when too few
        confirm."""
        wanted = self.durability.replicas
        if wanted <= 0:
            return
        written, acked = self._direct().calls(
            ("HSET", key, field, value), ("WAIT", wanted, self.durability.timeout_ms))
        for item in (written, acked):
            if isinstance(item, Exception):
                raise item
        if int(acked) < wanted:
            raise NotReplicated(what, int(acked), wanted, self.durability.timeout_ms)

    def transaction(self, commands: Sequence[tuple[Any, ...]], what: str,
                    hints: int = 0) -> list[Any]:
        """Write ``commands`` all or nothing (MULTI ... EXEC) in one round trip on this
        thread's connection, then WAIT there for the replicas ``durability`` asks for, in
        the same round trip. Packed by hiredis, not by a redis-py pipeline: its
        per-argument packing was half the CPU of a 20,000-task submit. EXEC's replies.
        The first error reply is raised: a command Redis refuses to queue aborts them all,
        but one that fails as it runs does not undo the others (the caller undoes them).
        The last ``hints`` commands (signals) may fail as they run: a lost hint costs
        latency, never the write. NotReplicated when too few replicas confirm (everything
        was written)."""
        wanted = self.durability.replicas
        wait = [("WAIT", wanted, self.durability.timeout_ms)] if wanted > 0 else []
        replies = self._direct().calls(("MULTI",), *commands, ("EXEC",), *wait)
        executed = replies[len(commands) + 1]
        ran = executed[:len(executed) - hints] if isinstance(executed, list) else []
        for reply in [*replies[:len(commands) + 1], executed, *ran]:
            if isinstance(reply, Exception):
                raise reply
        if wait:
            acked = replies[-1]
            if isinstance(acked, Exception):
                raise acked
            if int(acked) < wanted:
                raise NotReplicated(what, int(acked), wanted, self.durability.timeout_ms)
        return list(executed)

    def time_ms(self) -> float:
        """Redis's clock, in ms, read where the scripts run: on a Redis Cluster, the master
        of the namespace's slot (a plain TIME would ask any node, whose clock may differ)."""
        seconds, micros = self._direct().call("TIME")
        return int(seconds) * 1000 + int(micros) / 1000

    @cached_property
    def clock(self) -> RedisClock:
        """Redis's clock as this process reckons it (one TIME a minute, on a pooled
        connection: whichever thread asks needs no connection of its own): the times a
        worker writes (a task's start and end, a dependent's ready time, a cached
        result's expiry) are compared with those the scripts and other hosts write, so a
        host's wall clock must not give them."""
        return RedisClock(partial(server_time_ms, self.client, self.keys.wake))

    def now_ms(self) -> int:
        """Redis's clock now, in whole ms (``clock``)."""
        return int(self.clock.fresh_ms())

    # -- dispatcher -----------------------------------------------------------------

    def leader(self, dispatcher_id: str, ttl_ms: int) -> str | None:
        return self.lead(dispatcher_id, ttl_ms).token

    def lead(self, dispatcher_id: str, ttl_ms: int) -> Lead:
        """Take or renew the leader lease (``leader.lua``)."""
        reply = self._run("leader", [self.keys.leader, self.keys.epoch, self.keys.events,
                                     self.keys.dispatchers],
                          [dispatcher_id, ttl_ms, self.events.cap])
        if not reply:
            return Lead(None)
        token, bad_epoch = reply
        return Lead(token.decode(), bad_epoch)

    def set_aside(self, entry_id: str, record: bytes, source: str,
                  source_type: Literal["zset", "set", "list"], member: bytes) -> bool:
        """Move ``member`` out of the key ``source`` into the set-aside records
        (``set_aside.lua``); False when it was no longer there."""
        return bool(self._run("set_aside", [self.keys.aside, source],
                              [entry_id, record, source_type, member]))

    def note_aside(self, entry_id: str, record: bytes) -> None:
        """Record something wrong that stays where it is, unless it is recorded already
        (a single HSETNX: no script; the first record keeps when it was met)."""
        self.client.hsetnx(self.keys.aside, entry_id, record)

    def clear_aside(self, *entry_ids: str) -> int:
        """Drop set-aside records: the condition is gone, or an operator dismissed them."""
        return int(self.client.hdel(self.keys.aside, *entry_ids)) if entry_ids else 0

    def assign(self, leader_token: str, worker_id: str, queue: str, capacity: int,
               grace_ms: int, lease_prefix: str, task_ids: Sequence[str], refill_at: int = 1,
               depth: int = 1, tags: Sequence[str] = ()) -> tuple[int, int, int, int]:
        """(assigned, tasks leased to the worker now, ids dropped for lack of a record,
        deadlines set); assigned is -1 when ``leader_token`` no longer holds the lease.
        Nothing is leased unless ``refill_at`` places at least are free. ``depth``, the
        queue's prefetch per slot, goes into each inbox entry (``Lease.depth``). ``tags``:
        per task, the limited tags its lease counts against, comma-joined ('' none), or
        empty when no task has any."""
        k = self.keys
        tagged = any(tags)
        n, leased, dropped, deadlines = self._run(
            "assign",
            [k.leader, k.inbox(worker_id), k.leases(worker_id), k.inflight, k.queue(queue),
             k.deadlines, k.events, k.tag_inflight, *(k.task(t) for t in task_ids)],
            [leader_token, worker_id, queue, capacity, grace_ms, lease_prefix, refill_at, depth,
             *self.events.argv, "1" if tagged else "0", *task_ids, *(tags if tagged else ())],
        )
        return int(n), int(leased), int(dropped), int(deadlines)

    def submit_small(self, flow_id: str, flow: Mapping[str, Any], queue: str,
                     tasks: Sequence[tuple[str, float | None, Mapping[str, Any]]],
                     created_ms: int, recent_flows: int, signal: str,
                     offer: Offer | None = None, raw_offer: bytes = b"",
                     lease_prefix: str = "", grace_ms: int = 0) -> tuple[str, bytes | None]:
        """Write a small submit (``submit_small.lua``): the flow record, the task records
        (id, score when ready, fields), the ready ones queued in ``queue`` (the recent
        flows trimmed to ``recent_flows``, unless 0), and with
        ``offer`` (as read: ``raw_offer``) its taking. (The worker the ready tasks were
        leased to, or '' when the dispatcher was sent ``signal``; the queue's standing
        offer now, for the next submit.)"""
        k = self.keys
        keys = [k.flow(flow_id), k.flows, k.queues, k.queue(queue), k.wake, k.offer(queue),
                k.events, k.backlog(queue)]
        args: list[Any] = [flow_id, created_ms, recent_flows, queue, signal, len(tasks),
                           len(flow), *self.events.argv, *chain.from_iterable(flow.items())]
        for task_id, score, fields in tasks:
            keys.append(k.task(task_id))
            args += [task_id, "" if score is None else repr(score), len(fields)]
            args += chain.from_iterable(fields.items())
        if offer is None:
            args.append("")
        else:
            offer_keys, offer_args = self._offer_parts(queue, offer)
            keys += offer_keys
            args += [raw_offer, offer.epoch, lease_prefix, grace_ms, *offer_args]
        (worker, now), acked = self._run_durable("submit_small", keys, args)
        if acked < self.durability.replicas:
            raise NotReplicated(f"flow {flow_id}", acked, self.durability.replicas,
                                self.durability.timeout_ms)
        return worker.decode(), now

    def _offer_parts(self, queue: str, offer: Offer) -> tuple[list[str], list[Any]]:
        """The keys and the trailing arguments submit_small.lua takes an offer with: the
        same for every submit while the offer stands, so built once per offer."""
        cached = self._offer_cache
        if cached is not None and cached[0] == queue and cached[1] is offer:
            return cached[2], cached[3]
        k = self.keys
        keys = [k.leader, k.queue_conf(queue), k.workers, k.inflight, k.deadlines,
                k.tag_limits]
        args: list[Any] = [len(offer.workers), len(offer.others), offer.depth]
        for worker, capacity, host_load, places in offer.workers:
            keys += [k.inbox(worker), k.leases(worker)]
            args += [worker, capacity, repr(host_load), places]
        keys += [k.queue(q) for q in offer.others]
        self._offer_cache = (queue, offer, keys, args)
        return keys, args

    def promote(self, due: Sequence[tuple[str, str]]) -> int:
        """Queue due retries and delayed starts; ``due`` holds (task id, queue name) pairs."""
        k = self.keys
        keys = [k.delayed, k.gate]
        for task_id, queue in due:
            keys += [k.task(task_id), k.queue(queue)]
        return int(self._run("promote", keys, [t for t, _ in due]))

    def cascade(
        self, failed_id: str, flow_id: str, error: bytes, children: Sequence[str], ttl_ms: int,
        gated: Collection[str] = (), skipped: bool = False
    ) -> int:
        """Settle the dependents of a task that failed (or, ``skipped``, was skipped); those
        in ``gated`` only count it, and go to the gate once all their upstreams settled."""
        k = self.keys
        args: list[Any] = [failed_id, ttl_ms, error, "skipped" if skipped else "failed",
                           self.events.cap]
        for c in children:
            args += [c, "1" if c in gated else "0"]
        return int(self._run(
            "cascade",
            [k.cascade, k.flow(flow_id), k.flow_done(flow_id), k.gate, k.wake, k.events,
             *(k.task(c) for c in children)], args))

    def gate(self, task_id: str, flow_id: str, queue: str, mode: GateMode, ttl_ms: int, *,
             error: bytes = b"", state: str = "", result: bytes = b"", score: float = 0.0,
             expansions: Sequence[Expansion] = (), dependents: Sequence[Child] = ()) -> bool:
        """Apply the dispatcher's decision on a gated task (``gate.lua``); False when
        another call took it out of the gate first. ``expansions`` (expand): the map's
        children to queue (their records written beforehand), then the maps expanded with
        it item by item, whose children wait for the map's; ``dependents`` (gather): the
        task's own, to unlock."""
        k = self.keys
        keys = [k.gate, k.task(task_id), k.flow(flow_id), k.flow_done(flow_id), k.wake,
                k.cascade, k.queue(queue), k.delayed]
        args: list[Any] = [task_id, mode, ttl_ms, error, state, result, queue, repr(score)]
        if mode == "expand":
            root, *chained = expansions or [Expansion(task_id, ())]
            args += [len(root.children), root.dependents, root.nchildren, len(chained),
                     *root.children]
            keys += [k.task(c) for c in root.children]
            for e in chained:
                keys += [k.task(e.map_id), *(k.task(c) for c in e.children)]
                args += [e.map_id, e.dependents, e.nchildren, *e.children]
        else:
            args.append(len(dependents))
            for d in dependents:
                keys += [k.task(d.task_id), k.gate if d.gated else k.queue(d.queue)]
                args += [d.task_id, repr(d.score), "1" if d.gated else "0"]
        return bool(self._run("gate", keys, args))

    def reap(self, leader_token: str, worker_id: str, seen_before_ms: int,
             poison_threshold: int, quarantine_error: bytes, tasks: Sequence[LeasedTask],
             left: bool = False) -> tuple[int, int]:
        """Take back a dead worker's leases (``left``: it deregistered, the event says
        worker.left rather than worker.reaped)."""
        k = self.keys
        keys = [k.leader, k.worker(worker_id), k.workers, k.inbox(worker_id),
                k.leases(worker_id), k.inflight, k.dlq, k.deadlines, k.ahead(worker_id),
                k.events, k.tag_inflight, k.delayed]
        args: list[Any] = [leader_token, worker_id, seen_before_ms, poison_threshold,
                           quarantine_error, *self.events.argv, "left" if left else "reaped"]
        for t in tasks:
            keys += [k.task(t.task_id), k.queue(t.queue)]
            args += [t.task_id, t.token, "1" if t.started else "a" if t.ahead else "0"]
        requeued, dead = self._run("reap", keys, args)
        return int(requeued), int(dead)

    # -- worker ---------------------------------------------------------------------

    def heartbeat(self, worker_id: str, info: bytes, ttl_ms: int) -> tuple[bool, int, int]:
        """Register or refresh the worker and signal the dispatcher: (was registered,
        leases held, Redis time ms)."""
        return self.heartbeat_reply(self._run("heartbeat",
                                              *self._heartbeat_parts(worker_id, info, ttl_ms)))

    def heartbeat_command(self, worker_id: str, info: bytes, ttl_ms: int
                          ) -> tuple[Any, ...]:
        """``heartbeat`` as a command to pipeline with other partitions' (one round trip
        per master: worker/heartbeat.py); its reply goes to ``heartbeat_reply``."""
        return _evalsha("heartbeat", *self._heartbeat_parts(worker_id, info, ttl_ms))

    def _heartbeat_parts(self, worker_id: str, info: bytes, ttl_ms: int
                         ) -> tuple[list[str], list[Any]]:
        k = self.keys
        return ([k.worker(worker_id), k.workers, k.leases(worker_id), k.wake, k.events],
                [worker_id, info, ttl_ms, self.events.cap])

    @staticmethod
    def heartbeat_reply(reply: Any) -> tuple[bool, int, int]:
        existed, leased, now_ms = reply
        return bool(existed), int(leased), int(now_ms)

    def keep_alive(self, worker_id: str, redis_ms: int) -> bool:
        """A light heartbeat: only the worker's time in ``workers``, with no signal. False
        when the worker was not registered any more (reaped): it must beat in full.

        A single ZADD is atomic on its own and needs no script; ``redis_ms`` is the
        worker's reckoning of Redis time from its last full beat."""
        return self.client.zadd(self.keys.workers, {worker_id: redis_ms}) == 0

    def keep_alive_command(self, worker_id: str, redis_ms: int) -> tuple[Any, ...]:
        """``keep_alive`` as a command to pipeline; its reply is 0 while registered."""
        return ("ZADD", self.keys.workers, redis_ms, worker_id)

    def ack(self, worker_id: str, done: Sequence[Done], ttl_ms: int, finished_ms: int,
            quiet_above: int = -1) -> list[bool]:
        """Store a batch of results; per task, False when its lease had moved on. The
        dispatcher is signalled unless the worker still holds more than ``quiet_above``
        leases (-1: always), or the dispatcher is idle (``keys.idle``) and no dependent was
        queued."""
        return self.ack_and_take(worker_id, done, ttl_ms, finished_ms, 0, quiet_above)[0]

    def ack_and_take(self, worker_id: str, done: Sequence[Done], ttl_ms: int,
                     finished_ms: int, take: int, quiet_above: int = -1, ahead: str = ""
                     ) -> tuple[list[bool], list[bytes]]:
        """``ack``, then take up to ``take`` entries from the worker's inbox. With
        ``ahead`` (a pool child's field), the entries after the first are recorded as
        perhaps started (``keys.ahead``)."""
        keys, args = self._ack_call(worker_id, done, ttl_ms, finished_ms, take, quiet_above,
                                    ahead)
        reply, replicas = self._run_durable("ack", keys, args)
        if replicas < self.durability.replicas and done:
            _unreplicated(worker_id, replicas, self.durability)
        return self.acked(worker_id, reply)

    def ack_command(self, worker_id: str, done: Sequence[Done], ttl_ms: int,
                    finished_ms: int, quiet_above: int = -1) -> tuple[Any, ...]:
        """``ack`` (taking nothing) as a command to send on another connection, ahead of
        a blocking fetch (worker/inbox.py: ``send_before_fetch``); its reply goes to
        ``acked``. Not for settings that wait for replicas (``durability``): WAIT counts
        what its own connection wrote."""
        return _evalsha("ack", *self._ack_call(worker_id, done, ttl_ms, finished_ms, 0,
                                               quiet_above, ""))

    def acked(self, worker_id: str, reply: Any) -> tuple[list[bool], list[bytes]]:
        """An ``ack`` reply: per task whether it was stored, and the entries taken (those
        dropped as holding no lease are logged)."""
        stored, taken, forged = reply
        dropped(worker_id, forged)
        return [bool(x) for x in stored], list(taken)

    def _ack_call(self, worker_id: str, done: Sequence[Done], ttl_ms: int, finished_ms: int,
                  take: int, quiet_above: int, ahead: str) -> tuple[list[str], list[Any]]:
        k = self.keys
        keys = [k.leases(worker_id), k.inflight, k.wake, k.deadlines, k.inbox(worker_id),
                k.ahead(worker_id), k.idle, k.events, k.tag_inflight, k.delayed]
        args: list[Any] = [worker_id, ttl_ms, finished_ms, len(done), take, quiet_above,
                           ahead, *self.events.argv]
        tasks = self.events.tasks
        for d in done:
            keys += [k.task(d.task_id), k.flow(d.flow_id), k.flow_done(d.flow_id)]
            record = (events.task_record(d.task_id, d.flow_id, d.queue, d.name,
                                         d.ready_ms or None, d.started_ms, finished_ms)
                      if tasks else b"")
            args += [d.task_id, d.token, d.queue, d.started_ms, d.result,
                     "1" if d.has_deadline else "0", record, len(d.children)]
            for c in d.children:
                keys += [k.task(c.task_id), k.gate if c.gated else k.queue(c.queue)]
                args += [c.task_id, c.score, c.queue]
        return keys, args

    def _take_keys(self, worker_id: str) -> list[str]:
        k = self.keys
        return [k.inbox(worker_id), k.leases(worker_id), k.fetched(worker_id)]

    def take(self, worker_id: str, count: int, fetched: bool = True) -> list[bytes]:
        """Take up to ``count`` entries whose lease the worker holds (what a blocking
        fetch moved to ``fetched`` first, unless ``fetched`` is False because nothing can
        wait there, then the inbox), without blocking; entries without one are dropped
        (and logged)."""
        return self.take_counted(worker_id, count, fetched)[0]

    def take_counted(self, worker_id: str, count: int,
                     fetched: bool = True) -> tuple[list[bytes], int]:
        """``take``, and how many entries the inbox still holds after it."""
        keys = self._take_keys(worker_id)
        return self.taken(worker_id, self._run("take", keys if fetched else keys[:2], [count]))

    def take_command(self, worker_id: str, count: int, fetched: bool = True
                     ) -> tuple[Any, ...]:
        """``take`` as a command to send after a blocking fetch on the same connection
        (worker/inbox.py); its reply goes to ``taken``."""
        keys = self._take_keys(worker_id)
        return _evalsha("take", keys if fetched else keys[:2], [count])

    def taken(self, worker_id: str, reply: Any) -> tuple[list[bytes], int]:
        """The entries of a ``take`` reply, after logging those dropped, and how many the
        inbox still holds."""
        entries, forged, waiting = reply
        dropped(worker_id, forged)
        return list(entries), int(waiting)

    def take_one_commands(self, worker_id: str) -> tuple[tuple[Any, ...], ...]:
        """``take`` of the one entry a blocking fetch just moved to ``fetched``, as plain
        commands sent right behind it: the entry out of ``fetched``, up to
        ``TAKE_ONE_LEASES`` + 1 of the worker's leases (all of them while it holds no
        more than ``TAKE_ONE_LEASES``: a count at least the set's size returns the whole
        set), the inbox's length. Redis runs them before it answers the fetch, as it would
        take.lua, but a script's call cost the task waiting for them 35 to 45 us more
        (docs/scaling.md). The same check, made by the worker: their replies go to
        ``taken_one``."""
        k = self.keys
        return (("LPOP", k.fetched(worker_id)),
                ("SRANDMEMBER", k.leases(worker_id), TAKE_ONE_LEASES + 1),
                ("LLEN", k.inbox(worker_id)))

    def taken_one(self, worker_id: str, replies: Sequence[Any]) -> tuple[list[bytes], int, bool]:
        """The entry of ``take_one_commands``' replies if the worker holds its lease (else
        it is logged and dropped, never run), how many entries the inbox still holds, and
        whether the worker holds more than ``TAKE_ONE_LEASES`` leases. Then the leases
        read were a sample, and an entry it misses is checked by one more command
        (SISMEMBER)."""
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        entry, leases, waiting = replies
        many = len(leases) > TAKE_ONE_LEASES
        if not entry:  # none (the block ran out), or the sentinel that ends a fetch
            return [], int(waiting), many
        member = signals.entry_member(entry)
        if member not in leases and not (many and self._direct().call(
                "SISMEMBER", self.keys.leases(worker_id), member)):
            dropped(worker_id, [entry])
            return [], int(waiting), many
        return [entry], int(waiting), many

    def fail(self, worker_id: str, token: str, task_id: str, queue: str, flow_id: str,
             error: bytes, mode: FailMode, ttl_ms: int, poison_threshold: int,
             started_ms: int = 0) -> int:
        """FAIL_RETRIED: retry scheduled or re-queued; FAIL_QUARANTINED; FAIL_FAILED: failed
        for good; FAIL_REFUSED: the lease moved on, nothing changed."""
        k = self.keys
        info = codec.unpack_error(error)
        summary = f"{info.type}: {info.message}"[:SUMMARY_CHARS] if info else ""
        code, acked = self._run_durable(
            "fail",
            [k.task(task_id), k.leases(worker_id), k.inflight, k.flow(flow_id),
             k.flow_done(flow_id), k.wake, k.delayed, k.cascade, k.deadlines, k.queue(queue),
             k.dlq, k.events, k.tag_inflight],
            [worker_id, token, task_id, error, ttl_ms, mode, poison_threshold, queue,
             started_ms, *self.events.argv, summary],
        )
        if acked < self.durability.replicas:
            _unreplicated(worker_id, acked, self.durability)
        return int(code)

    def note_ahead(self, worker_id: str, field: str, value: str) -> None:
        """Rewrite a pool child's field of ``ahead:<worker>`` (the leases of its batch
        perhaps started; '' deletes it), without waiting for the reply, on the connection
        this thread's scripts use, so that it lands before this thread's next ack."""
        key = self.keys.ahead(worker_id)
        self._direct().send(*(("HSET", key, field, value) if value else ("HDEL", key, field)))

    def mark_running(self, worker_id: str, running: Sequence[tuple[str, str]],
                     started_ms: Sequence[int] = ()) -> int:
        """Mark (task id, token) pairs as running, where their lease still holds
        (``started_ms``: when each started, for the task.started event; 0 unknown)."""
        k = self.keys
        args: list[Any] = [worker_id, *self.events.argv]
        for i, (task_id, token) in enumerate(running):
            args += [task_id, token, started_ms[i] if i < len(started_ms) else 0]
        return int(self._run("mark_running",
                             [k.leases(worker_id), k.events,
                              *(k.task(t) for t, _ in running)], args))

    def slots_take(self, holder: str, limits: Sequence[tuple[str, int, float]],
                   occupy: int, lease_ms: int, rate: bool = False) -> SlotsTaken:
        """Take ``occupy`` slots of each (name, limit, decay per second) for ``holder``,
        all or none, leased (a block's) or, with ``rate``, left to decay (rate_limit's):
        (1, names taken), (0, a name without room now, ms until the first of its
        rate_limit's slots has decayed or -1), (-1, a name whose limit is below
        ``occupy``) or (-2, a name without decay, with ``rate``). Keys of partition 0:
        limits are cluster-wide."""
        k = self.keys.of(0)
        args: list[Any] = [holder, occupy, lease_ms, int(rate)]
        for name, limit, decay in limits:
            args += [name, limit, repr(float(decay))]
        code, detail, *frees = self._run("slots_take", [k.concurrency(n) for n, *_ in limits],
                                         args)
        return SlotsTaken(int(code), detail.decode() if isinstance(detail, bytes)
                          else int(detail), int(frees[0]) if frees else -1)

    def name_run(self, worker_id: str, task_id: str, token: str, name: str) -> bool:
        """Record the run's own name on its task, where the lease still holds."""
        k = self.keys
        return bool(self._run("name_run", [k.leases(worker_id), k.task(task_id)],
                              [task_id, token, name]))

    def record_loop(self, worker_id: str, task_id: str, token: str, loop: bytes,
                    deadline_ms: int) -> bool:
        """Record a looping run's progress on its task, and push its lease's deadline
        ``deadline_ms`` from now (0: none), where the lease still holds (loop.lua)."""
        k = self.keys
        return bool(self._run("loop", [k.leases(worker_id), k.task(task_id), k.deadlines],
                              [task_id, token, worker_id, loop, deadline_ms]))

    def release(self, worker_id: str, tasks: Sequence[LeasedTask]) -> int:
        k = self.keys
        keys = [k.inbox(worker_id), k.leases(worker_id), k.inflight, k.wake, k.deadlines,
                k.tag_inflight, k.delayed]
        args: list[Any] = [worker_id]
        for t in tasks:
            keys += [k.task(t.task_id), k.queue(t.queue)]
            args += [t.inbox_entry, t.task_id, t.token, t.queue]
        return int(self._run("release", keys, args))

    # -- operators ------------------------------------------------------------------

    def cancel(self, flow_id: str, tasks: Sequence[CancelTask], ttl_ms: int,
               listed: int = 0) -> CancelReply:
        """Cancel a flow run's unfinished tasks (``balancer.cancel`` gathers ``tasks``;
        ``listed``: the length of ``flow:<id>:tasks`` it read them from, an open run's)."""
        k = self.keys
        keys = [k.flow(flow_id), k.flow_done(flow_id), k.delayed, k.dlq, k.deadlines,
                k.inflight, k.wake, k.gate, k.flow_tasks(flow_id), k.events, k.tag_inflight]
        args: list[Any] = [ttl_ms, len(tasks), listed, *self.events.argv]
        for t in tasks:
            keys += [k.task(t.task_id), k.queue(t.queue)]
            if t.token:
                keys += [k.leases(t.worker), k.inbox(t.worker), k.cancels(t.worker)]
            args += [t.task_id, t.queue, t.token, t.worker, t.inbox_entry, t.mapped]
        reply = [v.decode() if isinstance(v, bytes) else v
                 for v in self._run("cancel", keys, args)]
        if reply[0] == "retry":
            return CancelReply("running", retry=tuple(str(v) for v in reply[1:]))
        return CancelReply(str(reply[0]), int(reply[1]), tuple(str(v) for v in reply[2:]))

    def queue_rm(self, queue: str) -> int:
        """1: the queue is removed; 0: it holds ready tasks; -1: no such queue."""
        k = self.keys
        return int(self._run("queue_rm", [k.queues, k.queue(queue), k.queue_conf(queue),
                                          k.offer(queue), k.inflight, k.wake], [queue]))

    def dlq_retry(self, task_id: str, queue: str) -> bool:
        k = self.keys
        return bool(self._run("dlq_retry", [k.dlq, k.task(task_id), k.queue(queue), k.wake,
                                           k.delayed],
                              [task_id]))

    def dlq_purge(self, task_id: str, flow_id: str, ttl_ms: int) -> bool:
        k = self.keys
        return bool(self._run(
            "dlq_purge",
            [k.dlq, k.task(task_id), k.flow(flow_id), k.flow_done(flow_id), k.cascade, k.wake,
             k.events],
            [task_id, ttl_ms, self.events.cap]))

    # -- open flow runs (a @flow function's: balancer/dynamic.py) ----------------------

    def flow_extend(self, flow_id: str, tasks: Sequence[AddedTask], signal: str) -> int:
        """Add ``tasks`` to an open run (``flow_extend.lua``); -1 (EXTEND_CLOSED) when it
        is not open, -2 (EXTEND_CANCELLED) when it was cancelled."""
        k = self.keys
        keys = [k.flow(flow_id), k.flow_tasks(flow_id), k.queues, k.wake, k.delayed]
        args: list[Any] = [flow_id, len(tasks), signal]
        for added in tasks:
            keys += [k.task(added.task_id), k.queue(added.queue)]
            args += [added.task_id, added.queue,
                     "" if added.score is None else repr(added.score), added.listing,
                     len(added.fields)]
            for name, value in added.fields.items():
                args += [name, value]
        added, acked = self._run_durable("flow_extend", keys, args)
        if acked < self.durability.replicas:
            raise NotReplicated(f"flow {flow_id}: {len(tasks)} tasks added", acked,
                                self.durability.replicas, self.durability.timeout_ms)
        return int(added)

    def flow_release(self, task_id: str, queue: str, score: float, flow_id: str,
                     ttl_ms: int, error: bytes, signal: str) -> int:
        """Queue a task of an open run whose upstream tasks completed, or, with ``error``,
        fail it as upstream_failed (``flow_release.lua``): 1 queued, 2 failed, 0 neither."""
        k = self.keys
        return int(self._run(
            "flow_release",
            [k.task(task_id), k.queue(queue), k.queues, k.wake, k.flow(flow_id),
             k.flow_done(flow_id), k.delayed],
            [task_id, queue, repr(score), ttl_ms, error, signal]))

    def flow_close(self, flow_id: str, state: str, ttl_ms: int, error: bytes) -> int:
        """Close an open run (``flow_close.lua``): 1 settled, 2 settles later, 0 not open."""
        k = self.keys
        return int(self._run("flow_close",
                             [k.flow(flow_id), k.flow_done(flow_id), k.flow_tasks(flow_id)],
                             [state, ttl_ms, error]))

    # -- schedules ------------------------------------------------------------------

    def schedule_put(self, schedule_id: str, clocks: bytes, first_due_ms: int,
                     fields: Mapping[str, Any]) -> tuple[int, bool]:
        """Add or replace a schedule (``schedule_put.lua``): (its next due time, True when
        it was kept because the clocks are the same)."""
        k = self.keys
        args: list[Any] = [schedule_id, clocks, first_due_ms]
        for name, value in fields.items():
            args += [name, value]
        due, kept = self._run("schedule_put", [k.schedules, k.schedule(schedule_id), k.wake],
                              args)
        return int(float(due)), bool(kept)

    def schedule_fire(self, leader_token: str, schedule_id: str, due_ms: float,
                      next_ms: int | None, version: str, run: ScheduledRun | None = None,
                      skipped: int = 0) -> int:
        """Advance a schedule past ``due_ms`` (its score as read) to ``next_ms`` (None: it
        ended) and write ``run``, or with ``skipped`` skip that many due times without a
        run, in one step (``schedule_fire.lua``): 1 done, 0 the schedule is not as read, -1
        not leader."""
        k = self.keys
        keys = [k.leader, k.schedules, k.schedule(schedule_id)]
        args: list[Any] = [leader_token, schedule_id,
                           due_ms if due_ms == int(due_ms) else repr(due_ms),
                           "" if next_ms is None else next_ms, version, skipped]
        if run is None:
            keys += [k.flow("-"), k.flows, k.queues, k.wake, k.flow_done("-"), k.gate,
                     k.delayed]
            return int(self._run("schedule_fire", keys, args))
        keys += [k.flow(run.flow_id), k.flows, k.queues, k.wake, k.flow_done(run.flow_id),
                 k.gate, k.delayed]
        args += [run.flow_id, run.recent, run.signal, len(run.flow)]
        for name, value in run.flow.items():
            args += [name, value]
        args.append(len(run.tasks))
        for task_id, fields in run.tasks.items():
            keys.append(k.task(task_id))
            args.append(len(fields))
            for name, value in fields.items():
                args += [name, value]
        args.append(len(run.queues))
        for queue, ready in run.queues.items():
            keys.append(k.queue(queue))
            args += [queue, len(ready)]
            for task_id, score in ready.items():
                args += [repr(score), task_id]
        args.append(len(run.gate))
        for task_id, at in run.gate.items():
            args += [repr(at), task_id]
        return int(self._run("schedule_fire", keys, args))
