"""The dispatcher loop: the only code that talks to Redis on the balancer's behalf.

It sleeps on the ``wake`` list (BLPOP) and wakes on signals or a short timer. It is an I/O
shell: what it believes, and what a dispatch round does next, is the pure state machine of
``balancer.dispatch_state`` (whose choices of worker come from ``balancer.scheduling``);
this module feeds it signals and Redis replies as events and executes the commands it
returns (read these queues, lease these ids to that worker, recount these workers).

It only acts while it holds the leader lease, and every lease it hands out is checked
against that lease's token inside the script, so a dispatcher that stalled and lost the
lease cannot assign twice.

Faults: when Redis cannot serve (unreachable, or refusing: OOM, READONLY, LOADING, BUSY
...) a step fails and the loop backs off, logging the episode once when it starts and once
when it ends. A bad entry (data no command can use: not UTF-8, a key of the wrong type, a
setting that is not a number) is found where the error it causes is caught, never by
checking every entry in advance, and is set aside (``balancer.setaside``) or its queue
skipped, so that every other queue keeps flowing.
"""

from __future__ import annotations

import functools
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis

from balancer import scheduling
from balancer.common import aside, keytypes, partitions, protocol, signals, topology
from balancer.common.connection import Direct
from balancer.common.keys import Keys
from balancer.common.keytypes import is_wrong_type
from balancer.common.models import QueueConfig
from balancer.common.replies import as_bytes_list, as_list, as_opt_bytes, as_scored, field_tags
from balancer.common.retry import (
    BACKOFF_MAX,
    RETRYABLE_ON_CLUSTER,
    Backoff,
    describe,
    error_message,
    is_outage,
)
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.contact import Contact
from balancer.dispatch_state import (
    Assign,
    Assigned,
    CheckRetries,
    CheckSchedules,
    DispatchState,
    QueuesRead,
    ReadQueues,
    Reap,
    Recount,
    RefreshQueues,
    RunCascade,
    WatchDeadlines,
)
from balancer.episodes import Episodes
from balancer.gates import Gates
from balancer.offers import StandingOffers
from balancer.schedule_fire import Firer, NotLeader
from balancer.setaside import SetAside
from balancer.taglimits import parse_limits
from balancer.troubles import Troubles
from balancer.upkeep import Upkeep
from balancer.view import ClusterView

log = logging.getLogger("balancer.dispatcher")

SIGNAL_BATCH = 1000
# How much longer than its block the wait for signals may take to answer (a busy server).
WAKE_READ_MARGIN = 5.0
# A queue's backlog key (``_publish_backlog``) lives this long unless renewed: one our
# state no longer stands behind (a step that failed after setting it, a leader gone) costs
# small submits to that queue their wake-up for at most this long.
BACKLOG_TTL = 1.0
CONFIG_REFRESH = 5.0
DEADLINE_CHECK = 1.0
UNSERVED_WARNING = 30.0
# How often the queues are looked over for one no worker serves (at every step, that cost
# O(queues) a task: a third of the dispatcher's time at 3,000 queues).
UNSERVED_CHECK = 1.0
# The gate is read on the signals that may have put a task in it, and at least this often.
GATE_RECHECK = 2.0
# How often the namespace's fixed keys are checked for a type of their own (_check_key_types).
KEY_TYPES_CHECK = 30.0
_GATE_SIGNALS = frozenset({signals.SUBMITTED, signals.ACK, signals.CASCADE})


def _may_have_gated(signal: signals.Signal) -> bool:
    """Whether the change ``signal`` tells of may have put a task in the gate. A submit
    that lists the ids it made ready (signals.READY: a small submit, a @flow run's tasks
    added or released) gated none: a submit that gates one sends SUBMITTED instead
    (balancer/submit.py, balancer/schedule_store.py). Not reading the gate on those saves
    a command per wake-up of the single-task submits' stream."""
    return signal.kind in _GATE_SIGNALS and signal.queued and not signal.ready


# An idle dispatcher reads the queues again this often even without a signal: signals are
# hints, and one lost (pushed while no dispatcher listened, trimmed from a full wake list)
# must cost seconds, never a task left waiting forever.
IDLE_RECHECK = 5.0
# An upkeep job that failed on data (not an outage) is tried again this often.
JOB_RETRY = 5.0
# The schedules' earliest due time is read again this often even without a signal.
SCHEDULES_RECHECK = 10.0
# Task ids whose tags the dispatcher remembers (tags never change): read once each while
# a tag has a limit, not at every look at a queue whose head waits for its tag.
TAG_CACHE = 100_000
# A worker's doorbell keeps at most this many notes (P > 1): one per partition is enough.
DOORBELL_MAX = 64


class Claims(Protocol):
    """Which partitions a dispatcher of a `balancer serve` leading several may lead
    (balancer/serve_partitions.py). None: lead whenever the lease is free."""

    def may_lead(self, partition: int, leading: bool) -> bool: ...

    def led(self, partition: int, leading: bool) -> None: ...


@dataclass
class _BellWire:
    """A connection to the master of another partition's doorbells, and its failures."""

    direct: Direct
    backoff: Backoff = field(default_factory=Backoff)
    retry_at: float = 0.0  # after a failure: no ring before then


class Dispatcher:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        dispatcher_id: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        partition: int = 0,
        count: int = 1,
        claims: Claims | None = None,
    ) -> None:
        self.client = client
        self.settings = settings
        # Partition ``partition`` of ``count`` (common/partitions.py): its keys, its lease.
        self.partition = partition
        self.count = count
        # Every partition on one server (not a Redis Cluster): a ring rides on our connection.
        self._one_server = topology.cluster_of(client) is None
        self.claims = claims
        self.keys = Keys(settings.namespace, partition)
        self.scripts = Scripts.for_settings(client, self.keys, settings)
        # The wait for signals on a connection of its own, without redis-py's command
        # path: under a steady stream of submits the dispatcher wakes about once per task,
        # and that path cost more of its CPU than anything the wake then does.
        self._wake_wire = Direct(client, read_timeout=settings.dispatch_tick + WAKE_READ_MARGIN,
                                 route=self.keys.wake)
        self.aside = SetAside(self.scripts, self.redis_now_ms)
        self.upkeep = Upkeep(client, self.keys, self.scripts, settings, self.aside)
        self.gates = Gates(client, self.keys, self.scripts, settings, self.aside)
        self.id = dispatcher_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        # Its own silences (Redis stalled, paused, away), after which the workers get time
        # to beat again before any is called dead. A beating worker looks dead after a
        # silence of the timeout less a beat's interval; half of that is the tolerance.
        self.contact = Contact(
            settings.worker_timeout,
            max(0.05, (settings.worker_timeout - settings.heartbeat_interval) / 2),
            f"dispatcher={self.id}")
        self._meant = 0.0  # seconds the current step meant to wait
        self._step_began = (0.0, 0.0)  # when it began, by our clock and by its CPU
        self.rng = rng or random.Random()
        self.clock = clock
        # What it believes about queues and workers, and what a round does next.
        self.state = DispatchState(self.rng, aging_ms=settings.aging_seconds * 1000,
                                   view=self._new_view())
        self.token: str | None = None
        self.stopping = threading.Event()
        self._renew_at = 0.0
        # When the quietest worker's silence reaches the timeout, as of the last scan of
        # them all: a lower bound (heard-from workers only get later), so the scan, O(workers),
        # runs when it is due instead of at every turn (10,000 workers in 16 loops spent
        # most of a core on it).
        self._liveness_at = 0.0
        self._configs_at = 0.0
        # Redis's clock on our monotonic clock: a step of this host's wall clock moves
        # nothing (carried on by the wall clock, a step of 20 s forward had every live
        # worker reaped every 4 s until the next reading, a minute later).
        self.redis_clock = self.scripts.clock
        self._next_due: float | None = None  # Redis ms of the earliest delayed retry
        self._cascade_pending = True
        self._gate_pending = True  # gated tasks (maps, triggers) may wait in the gate
        self._gate_at = 0.0
        self._deadlines_at = 0.0
        self._key_types_at = 0.0
        self._deadlines_pending = True  # running tasks with a timeout may exist
        self._leases_made = 0
        # Per home partition of doorbells on another master (_ring): a connection of ours.
        self._bells: dict[int, _BellWire] = {}
        self._unserved_warned: dict[str, float] = {}
        self._unserved_at = -UNSERVED_CHECK
        self._new_queues: set[str] = set()  # named by submits, not known yet (_add_queues)
        self.offers = StandingOffers()
        self._backlog: dict[str, float] = {}  # queue -> when we set its backlog key
        self.ttl_ms = int(settings.result_ttl * 1000)
        self.episodes = Episodes(f"dispatcher={self.id}")  # failing steps, while they last
        # Upkeep jobs that failed on data: the cause logged, and when to try again.
        self._jobs_failing: dict[str, tuple[str, float]] = {}
        # Bad data met on the way: set aside, its queue skipped or its worker shunned.
        self.troubles = Troubles(client, self.keys, self.aside, self.state)
        self._bad_epoch: bytes | None = None  # what the epoch key held, if it was no counter
        # The set-aside entry of a wake list of another type (an earlier leader's too).
        self._wake_entry = aside.entry_id(aside.WRONG_TYPE, self.keys.wake)
        self._deaf_loaded_at = 0.0  # when the picture was last rebuilt for want of signals
        self.firer = Firer(client, self.keys, self.scripts, settings, self.aside)
        self._schedules_due: float | None = None  # Redis ms of the earliest due schedule
        # When the schedules were last read (our clock); None: read them at the next turn.
        self._schedules_at: float | None = None
        self._task_tags: dict[str, tuple[str, ...]] = {}  # see TAG_CACHE
        self._tag_problems: list[str] = []  # what the tag limits last logged

    @property
    def view(self) -> ClusterView:
        return self.state.view

    @property
    def configs(self) -> dict[str, QueueConfig]:
        return self.state.configs

    @property
    def queue_names(self) -> set[str]:
        return self.state.queue_names

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        log.info("dispatcher=%s starting on namespace=%s%s", self.id, self.settings.namespace,
                 f" partition={self.partition}/{self.count}" if self.count > 1 else "")
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                self.step()
            except Exception as exc:
                # Nothing takes the dispatcher down, nor makes it spin: back off, go on.
                self._failed(exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = 0.1
            began, ended, meant = self._step_so_far()
            self.contact.succeeded(ended)
            self.contact.step(began, ended, meant)
            if self.episodes.current is not None:
                self.episodes.succeeded(self.clock())
        self._resign()
        self._wake_wire.close()
        log.info("dispatcher=%s stopped", self.id)

    def _failed(self, exc: Exception) -> None:
        """A step failed. When Redis cannot serve (unreachable, or an error reply such as
        OOM, READONLY, LOADING, BUSY) the lease may be lost meanwhile: lead again, and
        rebuild the picture, once it serves. Anything else (a bug, a bad entry nothing
        isolated) must not stop the loop either. Logged once per episode and cause."""
        if is_outage(exc):
            self.token = None
            self.contact.failed()
        self.state.stale()
        self.episodes.failed(exc, self.clock())

    def stop(self) -> None:
        self.stopping.set()

    def step(self) -> None:
        """One turn: hold the lease, read signals, run timers, hand out work."""
        self._step_began = self.clock(), time.thread_time()
        self._meant = 0.0
        if not self._lead():
            self._meant = min(self.settings.leader_ttl / 3, self.settings.dispatch_tick)
            self.stopping.wait(self._meant)
            return
        self._apply(self._signals(self._wait_time()))
        self._timers()
        if self.token is not None:
            self._dispatch()
            self._publish_backlog()
        if self.state.idle and self.token is not None:
            self._settle_idle()

    # -- leadership ------------------------------------------------------------------

    def _lead(self) -> bool:
        now = self.clock()
        if self.claims is not None and not self.claims.may_lead(self.partition,
                                                                self.token is not None):
            if self.token is not None:
                log.info("dispatcher=%s gives partition=%d up to another dispatcher", self.id,
                         self.partition)
                self._resign()
            return False
        if now < self._renew_at and self.token is not None:
            return True
        lead = self.scripts.lead(self.id, int(self.settings.leader_ttl * 1000))
        token = lead.token
        if self.claims is not None:
            self.claims.led(self.partition, token is not None)
        if lead.bad_epoch is not None:
            self._bad_epoch = lead.bad_epoch  # kept until reported
        if token is None:
            if self.token is not None:
                log.warning("dispatcher=%s lost the leader lease", self.id)
            self.token = None
            return False
        if token != self.token:
            log.info("dispatcher=%s leads with epoch=%s", self.id, token.split("|", 1)[0])
            self.token = token
            self._load()
        if self.partition == 0:
            self._stamp()
        if self._bad_epoch is not None:
            self.aside.note(aside.BAD_EPOCH, self.keys.epoch,
                            f"the epoch key held {aside.shown(self._bad_epoch)!r}, not a"
                            f" counter: took epoch {token.split('|', 1)[0]} from Redis's"
                            " clock instead (above any count of leaders)", self._bad_epoch)
            self._bad_epoch = None
        self._renew_at = now + self.settings.leader_ttl / 3
        return True

    def _stamp(self) -> None:
        """As the leader of partition 0, at each take and renewal of the lease, make the
        cluster's protocol stamp its own (clients of another protocol see it and refuse):
        one it finds spoiled (by hand, or by whoever can write to Redis) is written again
        within a third of the lease, not at the next change of leader. Read first, so
        that nothing is written while it holds (a write is refused when Redis is out of
        memory); a failure is only logged: the stamp is advice, and dispatching goes on."""
        mine = protocol.stamp().encode()
        try:
            found = as_opt_bytes(self.client.get(self.keys.protocol))
            if found != mine:
                self.client.set(self.keys.protocol, mine)
                if found is not None:
                    log.warning("dispatcher=%s: the protocol stamp read %r, not this leader's"
                                " %r: written again", self.id, aside.shown(found),
                                mine.decode())
        except redis.RedisError as exc:
            log.warning("dispatcher=%s: cannot write the protocol stamp (%s)", self.id, exc)

    def _resign(self) -> None:
        """Free the lease on a clean stop so that a standby takes over at once."""
        if self.token is None:
            return
        try:
            value = as_opt_bytes(self.client.get(self.keys.leader))
            if value is not None and value.decode() == self.token:
                self.client.delete(self.keys.leader)
            if self.claims is None:  # else the serve's registration: it still runs
                self.client.zrem(self.keys.dispatchers, self.id)
        except (redis.RedisError, UnicodeDecodeError):
            pass  # the lease runs out on its own
        self.token = None
        if self.claims is not None:
            self.claims.led(self.partition, False)

    def _load(self, quiet: bool = False) -> None:
        """Rebuild the picture from Redis: a new leader trusts nothing it remembered (nor
        does a deaf one: ``_signals``)."""
        self.redis_clock.sync()
        self.state.view = self._new_view()
        self._liveness_at = 0.0  # workers dated anew: scan them at the next turn
        self._jobs_failing = {}
        entries = self.troubles.worker_members(
            as_scored(self.client.zrange(self.keys.workers, 0, -1, withscores=True)))
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.idle)  # first: acks signal again before we count
        for wid, _ in entries:
            pipe.hget(self.keys.worker(wid), "info")
            pipe.scard(self.keys.leases(wid))
        pipe.hgetall(self.keys.aside)
        replies = pipe.execute()[1:]
        self.troubles.adopt(replies.pop())
        for i, (wid, score) in enumerate(entries):
            info, leased = replies[2 * i], replies[2 * i + 1]
            seen = self._local_time(score)
            if info is None or self.view.heartbeat(wid, int(leased), info, seen) is None:
                self.view.add(scheduling.WorkerView(wid, frozenset(), 0, int(leased),
                                                    last_seen=seen))
        self._job("queues", self._refresh_queues)
        self.state.reset()
        self.offers.forget()  # ours name an old epoch: submits refuse them until replaced
        self._backlog = {}  # as the state says anew (any key left lives out its short life)
        self._next_due = None
        self._schedules_at = None  # read them at once: due times wait for no signal
        self._cascade_pending = True
        self._gate_pending = True
        self._deadlines_pending = True
        log.log(logging.DEBUG if quiet else logging.INFO, "dispatcher=%s loaded %d workers,"
                " %d queues", self.id, len(self.view.workers), len(self.queue_names))

    # -- signals and timers ----------------------------------------------------------

    def _wait_time(self) -> float:
        if self.state.again or (self._cascade_pending and "cascade" not in self._jobs_failing):
            return 0.0
        if self._gate_pending and "gate" not in self._jobs_failing:
            return 0.0
        now = self.clock()
        wait = min(self.settings.dispatch_tick, max(0.0, self._renew_at - now))
        # Wake exactly when the quietest worker's silence reaches the timeout.
        if self.view.workers:
            due = max(self._liveness_at, self.contact.grace_until)
            wait = min(wait, max(0.0, due - now) + 0.001)
        if self._next_due is not None:
            wait = min(wait, max(0.0, (self._next_due - self.redis_now_ms()) / 1000))
        if self._schedules_due is not None and "schedules" not in self._jobs_failing:
            wait = min(wait, max(0.0, (self._schedules_due - self.redis_now_ms()) / 1000))
        return wait

    def _signals(self, timeout: float) -> list[signals.Signal]:
        """Wait up to ``timeout`` for signals, then take every one waiting, in one call. A
        wake list of another type (a Redis writer) is reported, and its signals done
        without: every turn then waits ``timeout`` and reads everything (``deaf``)."""
        self._meant += timeout
        try:
            raw = self._wake(timeout)
        except redis.ResponseError as exc:
            if not is_wrong_type(exc):  # an outage; a refusal (NOPERM) is no broken key
                raise
            self.aside.note(
                aside.WRONG_TYPE, self.keys.wake, f"unreadable ({error_message(exc)}): signals"
                " are lost until it is fixed, and the dispatcher reads every queue and counts"
                f" the workers' leases at each turn (redis-cli DEL {self.keys.wake})")
            if self.clock() - self._deaf_loaded_at > IDLE_RECHECK:
                # A worker that registered meanwhile: its signal was lost too.
                self._deaf_loaded_at = self.clock()
                self._load(quiet=True)
            self.state.deaf()
            self.stopping.wait(timeout)
            return []
        if self._wake_entry in self.aside.noted:
            self.aside.clear(self._wake_entry, "the wake list reads again")
        parsed = []
        for item in raw:
            signal = signals.parse(item)
            if signal is None:
                log.warning("ignored unreadable signal %r", item[:80])
            else:
                parsed.append(signal)
        return parsed

    def _wake(self, timeout: float) -> list[bytes]:
        """The signals waiting, after waiting up to ``timeout`` for one."""
        if timeout > 0:
            reply = self._wake_wire.call("BLMPOP", max(timeout, 0.01), 1, self.keys.wake,
                                         "LEFT", "COUNT", SIGNAL_BATCH)
            return as_bytes_list(as_list(reply)[1]) if reply else []
        return as_bytes_list(self._wake_wire.call("LPOP", self.keys.wake, SIGNAL_BATCH) or [])

    def _apply(self, batch: list[signals.Signal]) -> None:
        """Feed the signals to the state; do what it asks on the way."""
        if any(_may_have_gated(s) for s in batch):
            self._gate_pending = True  # a gated task may have been put in the gate
        for command in self.state.apply(batch, self.clock()):
            if isinstance(command, Reap):
                self._job(f"reap {command.worker}", functools.partial(
                    self._reap, command.worker, seen_before_ms=0, why="deregistered"))
            elif isinstance(command, RefreshQueues):
                if command.queues:
                    self._new_queues |= command.queues
                else:
                    self._configs_at = 0.0
            elif isinstance(command, RunCascade):
                self._cascade_pending = True
            elif isinstance(command, WatchDeadlines):
                self._deadlines_pending = True
            elif isinstance(command, CheckRetries):
                self._next_due = None
            elif isinstance(command, CheckSchedules):
                self._schedules_at = None

    def _timers(self) -> None:
        now = self.clock()
        if self.redis_clock.due():
            self.redis_clock.sync()
        if now - self._configs_at > CONFIG_REFRESH:
            self._job("queues", self._refresh_queues)
        elif self._new_queues:
            self._job("queues", self._add_queues)
        self._job("retries", self._promote)
        self._job("schedules", self._fire_schedules)
        if self._cascade_pending:
            self._job("cascade", self._cascade)
        if now - self._gate_at > GATE_RECHECK:
            self._gate_pending = True  # signals are hints: look now and then anyway
        if self._gate_pending:
            self._gate_at = now
            self._job("gate", self._gate)
        if self._deadlines_pending and now - self._deadlines_at > DEADLINE_CHECK:
            self._job("deadlines", self._expire_overdue)
        if now - self._unserved_at >= UNSERVED_CHECK:
            self._unserved_at = now
            self._job("unserved", self._warn_unserved)
        if now - self._key_types_at > KEY_TYPES_CHECK:
            self._key_types_at = now
            self._job("key types", self._check_key_types)
        self.state.tick(now, IDLE_RECHECK)
        if now < self._liveness_at or not self._may_reap():
            return
        overdue = self.view.overdue(now)
        if overdue:
            self._job("liveness", self._recheck_liveness)
            if not self._may_reap():
                return
            overdue = self.view.overdue(now)
        if overdue:
            self._liveness_at = now  # look again next turn, once these are reaped
        elif self.view.workers:
            self._liveness_at = min(w.last_seen + self.view.silence(w)
                                    for w in self.view.workers.values())
        for worker in overdue:
            seen_before = int(self.redis_now_ms() - self.view.silence(worker) * 1000)
            self._job(f"reap {worker.id}", functools.partial(
                self._reap, worker.id, seen_before_ms=seen_before, why="missed heartbeats"))

    def _may_reap(self) -> bool:
        """Whether a silent worker may be called dead now: not while the workers' beats
        may have been kept out as this step's calls were (it waited on Redis, beyond its
        wait for signals and its own CPU, for longer than the contact's tolerance)."""
        began, now, meant = self._step_so_far()
        self.contact.call(began, now, meant)
        return self.contact.may_reap(now)

    def _step_so_far(self) -> tuple[float, float, float]:
        """When this step began and now (our clock), and how much of that it meant to
        spend: waiting for signals, or on its own CPU."""
        began, cpu = self._step_began
        return began, self.clock(), self._meant + time.thread_time() - cpu

    def _job(self, name: str, job: Callable[[], Any]) -> None:
        """Run one upkeep job. An outage fails the step (the loop backs off); anything else
        it trips on (a bad entry, a bug) pauses this job for JOB_RETRY, logged once while
        it lasts, so that every queue is still dispatched meanwhile."""
        failing = self._jobs_failing.get(name)
        if failing is not None and self.clock() < failing[1]:
            return
        try:
            job()
        except Exception as exc:
            if is_outage(exc):
                raise
            cause = f"{type(exc).__name__}: {exc}"
            if failing is None or failing[0] != cause:
                log.error("dispatcher=%s: upkeep job %s failed (%s); it pauses, the rest goes"
                          " on", self.id, name, cause, exc_info=not isinstance(
                              exc, redis.ResponseError))
            self._jobs_failing[name] = (cause, self.clock() + JOB_RETRY)
            return
        if failing is not None:
            del self._jobs_failing[name]
            log.info("dispatcher=%s: upkeep job %s succeeds again", self.id, name)

    def _new_view(self) -> ClusterView:
        return ClusterView(self.settings.worker_timeout, self.settings.heartbeat_interval)

    def _recheck_liveness(self) -> None:
        """Light heartbeats date a worker in ``workers`` without a signal: read those
        dates (one ZRANGE for all workers) before calling anyone dead."""
        dates = self.troubles.worker_members(
            as_scored(self.client.zrange(self.keys.workers, 0, -1, withscores=True)))
        for wid, score in dates:
            view = self.view.workers.get(wid)
            if view is not None:
                view.last_seen = max(view.last_seen, self._local_time(score))

    def _local_time(self, redis_ms: float) -> float:
        """Our clock's reading at the Redis time ``redis_ms`` (never later than now)."""
        return self.clock() - max(0.0, self.redis_now_ms() - redis_ms) / 1000

    def redis_now_ms(self) -> float:
        return self.redis_clock.now_ms()

    def _refresh_queues(self) -> None:
        """Read the queue list and every queue's config; queues skipped for trouble are
        tried again."""
        names = sorted(self.troubles.queue_list(set(as_bytes_list(
            self.client.smembers(self.keys.queues)))))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.queue_conf(name))
        pipe.hgetall(self.keys.tag_limits)
        replies = pipe.execute(raise_on_error=False)
        self.state.refreshed({n: self.troubles.queue_config(n, h) for n, h in zip(names, replies)},
                             self._tag_limits(replies[-1]))
        self._configs_at = self.clock()
        self._new_queues = set()

    def _add_queues(self) -> None:
        """Read the configs of the queues submits named that we did not know, only: a
        queue per tenant costs one read each, not a read of every queue each (3,000 such
        queues took 100 s to start with). The full refresh that follows within
        CONFIG_REFRESH drops a name no submit wrote to the queue list (a forged signal)."""
        names = sorted(self._new_queues - self.queue_names)
        self._new_queues = set()
        if not names:
            return
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.queue_conf(name))
        replies = pipe.execute(raise_on_error=False)
        self.state.added({n: self.troubles.queue_config(n, h) for n, h in zip(names, replies)})

    def _tag_limits(self, reply: Any) -> dict[str, int]:
        """The tag limits as read; what is unusable in them logged once (the tag reads as
        unlimited)."""
        limits: dict[str, int] = {}
        if isinstance(reply, Exception):
            problems = [f"{self.keys.tag_limits} cannot be read: {reply}"]
        else:
            limits, problems = parse_limits(reply)
        if problems and problems != self._tag_problems:
            log.error("dispatcher=%s: tag limits: %s", self.id, "; ".join(problems))
        self._tag_problems = problems
        if not limits:
            self._task_tags = {}
        return limits

    # -- retries, failures, dead workers ---------------------------------------------

    def _promote(self) -> None:
        now = self.redis_now_ms()
        if self._next_due is not None and self._next_due > now:
            return
        moved, self._next_due = self.upkeep.promote(now)
        if moved:
            self.state.stale()
            self._gate_pending = True  # a delayed start of a gated task went to the gate

    def _fire_schedules(self) -> None:
        """Fire the schedules that are due (``balancer.schedule_fire``), when one is due or
        they changed, and every SCHEDULES_RECHECK at least (a lost signal)."""
        if self.token is None:
            return
        now = self.redis_now_ms()
        due = self._schedules_due
        if (self._schedules_at is not None
                and self.clock() - self._schedules_at < SCHEDULES_RECHECK
                and (due is None or due > now)):
            return
        self._schedules_at = self.clock()
        try:
            self._schedules_due = self.firer.fire_due(self.token, int(now))
        except NotLeader:
            log.warning("dispatcher=%s is no longer leader; stopped firing schedules", self.id)
            self.token = None

    def _cascade(self) -> None:
        self._cascade_pending = self.upkeep.cascade()

    def _gate(self) -> None:
        self._gate_pending = self.gates.run()

    def _expire_overdue(self) -> None:
        self._deadlines_at = self.clock()
        self._deadlines_pending = self.upkeep.expire_overdue(self.redis_now_ms())

    def _reap(self, worker_id: str, seen_before_ms: int, why: str) -> None:
        if self.token is None:
            return
        requeued, dead, ids = self.upkeep.reap(self.token, worker_id, seen_before_ms,
                                               left=why == "deregistered")
        if requeued == -1:
            log.warning("dispatcher=%s is no longer leader; not reaping worker=%s", self.id,
                        worker_id)
            self.token = None
            return
        if requeued == -2:  # it spoke meanwhile
            view = self.view.workers.get(worker_id)
            if view is not None:
                view.last_seen = self.clock()
            return
        self.view.forget(worker_id)
        self.state.stale()
        if requeued:
            self._next_due = None  # one whose queue refused it waits in the delayed set
        level = logging.INFO if why == "deregistered" else logging.WARNING
        log.log(level, "worker=%s reaped (%s): requeued=%d quarantined=%d tasks=%s", worker_id,
                why, requeued, dead, ",".join(ids[:20]))

    # -- handing out work ------------------------------------------------------------

    def _dispatch(self) -> None:
        """One round, as the state plans it: recount the workers if waking from quiet,
        read the heads of the queues some worker has room for (or take the ids a small
        submit listed), then lease them, highest-ranked queue first, each task to the
        least-loaded eligible worker; every reply is fed back to plan the next step."""
        command = self.state.begin_round()
        while command is not None:
            if isinstance(command, Assign) and self.clock() >= self._renew_at:
                # Renew the lease before leasing more: with many one-slot workers a round
                # is a thousand round trips, which may outlast it (the scale run of
                # docs/scaling.md lost leases so, and reloaded 10,000 workers each time).
                self.state.cut()
                return
            if isinstance(command, Recount):
                command = self.state.recounted(self._recount(command.workers))
            elif isinstance(command, ReadQueues):
                read = self._read_queues(command)
                command = self.state.queues_read(read, self.clock(), self.redis_now_ms())
            else:
                command = self.state.assigned(self._assign(command))

    def _recount(self, workers: tuple[str, ...]) -> dict[str, int]:
        """Leave quiet: delete the idle key, then read what the workers that held leases
        hold now (their acks may have been silent), in one round trip. (A count too low,
        of a worker that took an offer, costs at most a refused assign: see _assign.)"""
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.idle)  # first: acks signal again before we count
        for worker in workers:
            pipe.scard(self.keys.leases(worker))
        return {w: int(held) for w, held in zip(workers, pipe.execute()[1:])}

    def _read_queues(self, command: ReadQueues) -> QueuesRead:
        """Read the queues' heads in one round trip; set aside what cannot be used. Each
        queue's backlog key goes first: a small submit after it wakes us, one before it
        queued its task before the read."""
        pipe = self.client.pipeline(transaction=False)
        for q, _ in command.heads:  # a DEL each: a cluster pipeline takes one key per DEL
            pipe.delete(self.keys.backlog(q))
            self._backlog.pop(q, None)
        for q, n in command.heads:
            pipe.zrange(self.keys.queue(q), 0, n - 1, withscores=True)
        if command.inflight:
            pipe.hgetall(self.keys.inflight)
        if command.tags:
            pipe.hgetall(self.keys.tag_inflight)
        rows = pipe.execute(raise_on_error=False)[len(command.heads):]
        tag_leased = (self.troubles.lease_counts(self.keys.tag_inflight, rows.pop(), "tag")
                      if command.tags else {})
        inflight = (self.troubles.lease_counts(self.keys.inflight, rows.pop(), "queue")
                    if command.inflight else {})
        servable = [q for q, _ in command.heads]
        rows = [self.troubles.read(q, r) for q, r in zip(servable, rows)]
        cleaned: set[str] = set()  # queues bad members were taken out of, just now
        try:
            ready = {q: [m.decode() for m, _ in r] for q, r in zip(servable, rows) if r}
        except UnicodeDecodeError:
            rows = [self.troubles.readable(q, r, cleaned) for q, r in zip(servable, rows)]
            ready = {q: [m.decode() for m, _ in r] for q, r in zip(servable, rows) if r}
        heads = {q: r[0][1] for q, r in zip(servable, rows) if r}
        tags = self._tags_of([t for ids in ready.values() for t in ids]) if command.tags else {}
        return QueuesRead(ready, heads, frozenset(cleaned), inflight, tags, tag_leased)

    def _tags_of(self, task_ids: list[str]) -> dict[str, tuple[str, ...]]:
        """The tags of the tasks that have some, read (one round trip) for those not
        remembered yet."""
        known = self._task_tags
        found = {t: known[t] for t in task_ids if t in known}
        missing = [t for t in task_ids if t not in found]
        if missing:
            pipe = self.client.pipeline(transaction=False)
            for task_id in missing:
                pipe.hget(self.keys.task(task_id), "tags")
            if len(known) + len(missing) > TAG_CACHE:
                known.clear()
            for task_id, raw in zip(missing, pipe.execute(raise_on_error=False)):
                found[task_id] = known[task_id] = field_tags(raw)
        return {t: tags for t, tags in found.items() if tags}

    def _settle_idle(self) -> None:
        """Found idle: write what changed of the standing offers, and set the idle key when
        every served queue was read empty, in one round trip (none when nothing changed)."""
        assert self.token is not None
        pipe = self.client.pipeline(transaction=False)
        troubled = frozenset(self.troubles.troubled.values())
        # With partitions, no standing offers: a submit that leased to a worker itself
        # would not ring its doorbell (it finds the lease at its next sweep only).
        offers = (self.offers.plan(self.state, self.token, troubled) if self.count == 1
                  else None)
        if offers is not None:
            for q, offer in offers.put.items():
                pipe.set(self.keys.offer(q), offer.encode())
            for q in offers.delete:
                pipe.delete(self.keys.offer(q))
        # Quiet only when no queue went unread for want of room: its tasks need the slots
        # acks free.
        quiet = self.state.wants_quiet()
        if quiet:
            pipe.set(self.keys.idle, 1)
        if len(pipe):
            pipe.execute()
        if offers is not None:
            self.offers.written(offers)  # only once written
        if quiet:
            self.state.idle_set()

    def _publish_backlog(self) -> None:
        """Tell small submits which queues wait for room (``backlog:<queue>``, the state's
        ``backlogged``): one queued there then does not wake us for nothing, the room
        freed will (an ack, a worker registering), and we read the queue then. Set with a
        short life, renewed at half of it; dropped once the state no longer says so."""
        wanted, now = self.state.backlogged, self.clock()
        due = [q for q in wanted if now - self._backlog.get(q, -BACKLOG_TTL) >= BACKLOG_TTL / 2]
        gone = [q for q in self._backlog if q not in wanted]
        if not due and not gone:
            return
        pipe = self.client.pipeline(transaction=False)
        for q in due:
            pipe.set(self.keys.backlog(q), 1, px=int(BACKLOG_TTL * 1000))
        for q in gone:
            pipe.delete(self.keys.backlog(q))
        pipe.execute()
        for q in gone:
            del self._backlog[q]
        for q in due:
            self._backlog[q] = now

    def _check_key_types(self) -> None:
        """Report the fixed keys of the namespace that hold another type than the schema's
        (a Redis writer's doing) in `balancer dlq aside`, and so in `balancer status`, the
        dashboard and /metrics, until they are fixed: a script that writes such a key
        fails (a retry in the delayed set, a quarantine in the dlq), and the upkeep job
        that reads it pauses, which its log says once but an operator may not read. The
        queues, the wake list and the set-aside hash itself are reported elsewhere, or
        cannot be."""
        skipped = {self.keys.wake, self.keys.aside}
        wrong = {w.key: w for w in keytypes.wrong_fixed_types(self.client, self.keys)
                 if w.key not in skipped}
        for key, found in wrong.items():
            self.aside.note(aside.WRONG_TYPE, key, f"holds a {found.found}, not a"
                            f" {found.expected}: the scripts that write it fail, and what"
                            " they carry may be lost; fix it or delete it (redis-cli DEL"
                            f" {key})")
        for key in keytypes.expected_types(self.keys).keys() - wrong.keys() - skipped:
            entry = aside.entry_id(aside.WRONG_TYPE, key)  # ours, or an earlier leader's
            if entry in self.aside.noted:
                self.aside.clear(entry, f"{key} holds its type again")

    def _warn_unserved(self) -> None:
        """Say so when tasks wait in a queue that no registered worker serves."""
        now = self.clock()
        unserved = [q for q in sorted(self.queue_names - self.state.skipped)
                    if not self.view.rooms.served(q)
                    and now - self._unserved_warned.get(q, -UNSERVED_WARNING) >= UNSERVED_WARNING]
        if not unserved:
            return
        pipe = self.client.pipeline(transaction=False)
        for q in unserved:
            pipe.zcard(self.keys.queue(q))
        for q, depth in zip(unserved, pipe.execute(raise_on_error=False)):
            if isinstance(depth, Exception):
                self.troubles.queue_failed(q, depth)
            elif depth:
                self._unserved_warned[q] = now
                others = self.view.of_other_releases(q)
                if others:
                    log.warning("queue=%s has %d ready tasks and only workers of another"
                                " release serve it (%s): they get none (README,"
                                " \"Upgrading\")", q, depth, ",".join(others))
                else:
                    log.warning("queue=%s has %d ready tasks but no worker serves it"
                                " (start one with: worker start --queue %s)", q, depth, q)

    def _assign(self, command: Assign) -> Assigned:
        """Lease a batch to a worker: how many it took and holds now, n -1 if we lost the
        lead."""
        worker_id, queue, batch = command.worker, command.queue, list(command.task_ids)
        assert self.token is not None
        self._leases_made += 1
        # Leases of a queue without a limit are not counted in inflight: no one reads it.
        prefix = protocol.lease_prefix(protocol.leader_epoch(self.token), self._leases_made,
                                       counted=command.limited)
        try:
            n, leased, dropped, deadlines = self.scripts.assign(
                self.token, worker_id, queue, command.room,
                int(self.settings.timeout_grace * 1000), prefix, batch, command.refill_at,
                command.depth, command.tags)
        except redis.ResponseError as exc:
            if is_outage(exc):
                raise
            self.troubles.assign_failed(worker_id, queue, batch, exc)
            return Assigned(0, failed=True)
        self.troubles.leased(worker_id, queue)
        if dropped:
            log.error("queue=%s held %d ids without a task record; dropped them", queue, dropped)
        if n == -1:
            log.warning("dispatcher=%s is no longer leader; stopped assigning", self.id)
            self.token = None
            return Assigned(-1)
        if deadlines:
            self._deadlines_pending = True
        if n:
            log.info("assigned %d tasks of queue=%s to worker=%s: %s", n, queue, worker_id,
                     ",".join(batch[:n][:10]))
            if self.count > 1:
                self._ring(worker_id, n)
        return Assigned(n, leased)

    def _ring(self, worker_id: str, leased: int) -> None:
        """Tell a worker serving several partitions that its inbox in ours holds leases:
        a note per lease (each wakes one of its pool processes blocked on it) on the
        doorbell in its home partition, the one list it blocks on. A separate command
        (another slot): a note lost costs the worker's next sweep of every inbox
        (worker/doorbell.py: SWEEP seconds at most).

        So a doorbell out of reach (its partition's master failing over) is no failure of
        this partition: the lease stands, and this loop goes on leading and leasing. A
        doorbell on another master gets its note down a connection of this loop's own to
        that master (connection.Direct), which fails at once where redis-py's cluster
        client would retry until the failover ended, holding up this loop and letting its
        lease lapse; after a failure, that partition's doorbells are left alone for a
        backoff step."""
        home = partitions.home(worker_id, self.count)
        bell = self.keys.of(home).doorbell(worker_id)
        ring = ("RPUSH", bell, *[self.partition] * min(leased, DOORBELL_MAX))
        trim = ("LTRIM", bell, -DOORBELL_MAX, -1)
        if home == self.partition or self._one_server:
            # On the connection the lease went down, without waiting for the replies
            # (the next script call reads them): no round trip of its own per lease.
            self.scripts.note(ring, trim)
            return
        wire = self._bells.get(home)
        if wire is None:
            wire = self._bells[home] = _BellWire(Direct(self.client, route=bell))
        backoff, now = wire.backoff, self.clock()
        if backoff.delay and now < wire.retry_at:
            return
        try:
            wire.direct.calls(ring, trim)
        except RETRYABLE_ON_CLUSTER as exc:
            if backoff.failed():
                log.warning("dispatcher=%s partition=%d cannot ring the doorbells in"
                            " partition %d (their workers find its leases at their next"
                            " sweep): %s", self.id, self.partition, home, describe(exc))
            wire.retry_at = now + backoff.delay
            return
        if backoff.recovered():
            log.info("dispatcher=%s partition=%d rings the doorbells in partition %d again",
                     self.id, self.partition, home)

