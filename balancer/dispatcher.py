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

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, cast

import redis

from balancer import scheduling
from balancer.common import aside, signals
from balancer.common.keys import Keys
from balancer.common.models import QueueConfig
from balancer.common.retry import error_message, is_outage
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.dispatch_state import (
    Assign,
    Assigned,
    CheckRetries,
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
from balancer.offers import StandingOffers
from balancer.setaside import SetAside
from balancer.upkeep import Upkeep
from balancer.view import ClusterView

log = logging.getLogger("balancer.dispatcher")

SIGNAL_BATCH = 1000
CONFIG_REFRESH = 5.0
CLOCK_REFRESH = 60.0
DEADLINE_CHECK = 1.0
UNSERVED_WARNING = 30.0
# An idle dispatcher reads the queues again this often even without a signal: signals are
# hints, and one lost (pushed while no dispatcher listened, trimmed from a full wake list)
# must cost seconds, never a task left waiting forever.
IDLE_RECHECK = 5.0
# An upkeep job that failed on data (not an outage) is tried again this often.
JOB_RETRY = 5.0


class Dispatcher:
    def __init__(
        self,
        client: redis.Redis,
        settings: Settings,
        *,
        dispatcher_id: str | None = None,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.scripts = Scripts(client, self.keys)
        self.aside = SetAside(self.scripts, self.redis_now_ms)
        self.upkeep = Upkeep(client, self.keys, self.scripts, settings, self.aside)
        self.id = dispatcher_id or f"{socket.gethostname()}-{os.getpid()}-{os.urandom(2).hex()}"
        self.rng = rng or random.Random()
        self.clock = clock
        # What it believes about queues and workers, and what a round does next.
        self.state = DispatchState(self.rng, aging_ms=settings.aging_seconds * 1000)
        self.token: str | None = None
        self.stopping = threading.Event()
        self._renew_at = 0.0
        self._configs_at = 0.0
        self._clock_at = 0.0
        self._offset_ms = 0.0
        self._next_due: float | None = None  # Redis ms of the earliest delayed retry
        self._cascade_pending = True
        self._deadlines_at = 0.0
        self._deadlines_pending = True  # running tasks with a timeout may exist
        self._leases_made = 0
        self._unserved_warned: dict[str, float] = {}
        self.offers = StandingOffers()
        self.ttl_ms = int(settings.result_ttl * 1000)
        self.episodes = Episodes(f"dispatcher={self.id}")  # failing steps, while they last
        # Upkeep jobs that failed on data: the cause logged, and when to try again.
        self._jobs_failing: dict[str, tuple[str, float]] = {}
        # Open set-aside conditions about a queue (entry id -> queue): no standing offer
        # involves that queue, whose key a small submit's script would trip on too.
        self._troubled: dict[str, str] = {}
        # Workers a lease failed for (their own keys, it seems: entry id); the state shuns
        # them until the next refresh.
        self._worker_trouble: dict[str, str] = {}
        self._bad_epoch: bytes | None = None  # what the epoch key held, if it was no counter

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
        log.info("dispatcher=%s starting on namespace=%s", self.id, self.settings.namespace)
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                self.step()
            except Exception as exc:
                # Nothing takes the dispatcher down, nor makes it spin: back off, go on.
                self._failed(exc)
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if self.episodes.current is not None:
                self.episodes.succeeded(self.clock())
        self._resign()
        log.info("dispatcher=%s stopped", self.id)

    def _failed(self, exc: Exception) -> None:
        """A step failed. When Redis cannot serve (unreachable, or an error reply such as
        OOM, READONLY, LOADING, BUSY) the lease may be lost meanwhile: lead again, and
        rebuild the picture, once it serves. Anything else (a bug, a bad entry nothing
        isolated) must not stop the loop either. Logged once per episode and cause."""
        if is_outage(exc):
            self.token = None
        self.state.stale()
        self.episodes.failed(exc, self.clock())

    def stop(self) -> None:
        self.stopping.set()

    def step(self) -> None:
        """One turn: hold the lease, read signals, run timers, hand out work."""
        if not self._lead():
            self.stopping.wait(min(self.settings.leader_ttl / 3, self.settings.dispatch_tick))
            return
        self._apply(self._signals(self._wait_time()))
        self._timers()
        if self.token is not None:
            self._dispatch()
        if self.state.idle and self.token is not None:
            self._settle_idle()

    # -- leadership ------------------------------------------------------------------

    def _lead(self) -> bool:
        now = self.clock()
        if now < self._renew_at and self.token is not None:
            return True
        lead = self.scripts.lead(self.id, int(self.settings.leader_ttl * 1000))
        token = lead.token
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
        if self._bad_epoch is not None:
            self.aside.note(aside.BAD_EPOCH, self.keys.epoch,
                            f"the epoch key held {aside.shown(self._bad_epoch)!r}, not a"
                            f" counter: took epoch {token.split('|', 1)[0]} from Redis's"
                            " clock instead (above any count of leaders)", self._bad_epoch)
            self._bad_epoch = None
        self._renew_at = now + self.settings.leader_ttl / 3
        return True

    def _resign(self) -> None:
        """Free the lease on a clean stop so that a standby takes over at once."""
        if self.token is None:
            return
        try:
            value = self.client.get(self.keys.leader)
            if value is not None and value.decode() == self.token:
                self.client.delete(self.keys.leader)
        except (redis.RedisError, UnicodeDecodeError):
            pass  # the lease runs out on its own
        self.token = None

    def _load(self) -> None:
        """Rebuild the picture from Redis: a new leader trusts nothing it remembered."""
        self._sync_clock()
        self.state.view = ClusterView()
        self._jobs_failing = {}
        entries = self.client.zrange(self.keys.workers, 0, -1, withscores=True)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.idle)  # first: acks signal again before we count
        for member, _ in entries:
            wid = member.decode()
            pipe.hget(self.keys.worker(wid), "info")
            pipe.scard(self.keys.leases(wid))
        pipe.hgetall(self.keys.aside)
        replies = pipe.execute()[1:]
        self._adopt(replies.pop())
        for i, (member, score) in enumerate(entries):
            wid, info, leased = member.decode(), replies[2 * i], replies[2 * i + 1]
            seen = self._local_time(score)
            if info is None or self.view.heartbeat(wid, int(leased), info, seen) is None:
                view = scheduling.WorkerView(wid, frozenset(), 0, int(leased), last_seen=seen)
                self.view.workers[wid] = view
        self._job("queues", self._refresh_queues)
        self.state.reset()
        self.offers.forget()  # ours name an old epoch: submits refuse them until replaced
        self._next_due = None
        self._cascade_pending = True
        self._deadlines_pending = True
        log.info("dispatcher=%s loaded %d workers, %d queues", self.id,
                 len(self.view.workers), len(self.queue_names))

    def _adopt(self, records: dict[bytes, bytes]) -> None:
        """Take over the set-aside records of an earlier leader: a queue it skipped for
        trouble is tried again, and its record cleared once it reads."""
        self._troubled, self._worker_trouble = {}, {}
        self.state.skipped, self.state.shunned = set(), set()
        for entry, record in self.aside.adopt(records):
            if record.queue and not record.member and record.kind != aside.BAD_CONFIG:
                self._troubled[entry] = record.queue

    # -- signals and timers ----------------------------------------------------------

    def _wait_time(self) -> float:
        if self.state.again or (self._cascade_pending and "cascade" not in self._jobs_failing):
            return 0.0
        now = self.clock()
        wait = min(self.settings.dispatch_tick, max(0.0, self._renew_at - now))
        # Wake exactly when the quietest worker's silence reaches the timeout.
        if self.view.workers:
            oldest = min(w.last_seen for w in self.view.workers.values())
            wait = min(wait, max(0.0, oldest + self.settings.worker_timeout - now) + 0.001)
        if self._next_due is not None:
            wait = min(wait, max(0.0, (self._next_due - self.redis_now_ms()) / 1000))
        return wait

    def _signals(self, timeout: float) -> list[signals.Signal]:
        """Wait up to ``timeout`` for signals, then take every one waiting, in one call."""
        if timeout > 0:
            reply = self.client.blmpop(max(timeout, 0.01), 1, self.keys.wake,
                                       direction="LEFT", count=SIGNAL_BATCH)
            raw = reply[1] if reply else []
        else:
            raw = self.client.lpop(self.keys.wake, SIGNAL_BATCH) or []
        parsed = []
        for item in raw:
            signal = signals.parse(item)
            if signal is None:
                log.warning("ignored unreadable signal %r", item[:80])
            else:
                parsed.append(signal)
        return parsed

    def _apply(self, batch: list[signals.Signal]) -> None:
        """Feed the signals to the state; do what it asks on the way."""
        for command in self.state.apply(batch, self.clock()):
            if isinstance(command, Reap):
                self._job(f"reap {command.worker}", lambda w=command.worker: self._reap(
                    w, seen_before_ms=0, why="deregistered"))
            elif isinstance(command, RefreshQueues):
                self._configs_at = 0.0
            elif isinstance(command, RunCascade):
                self._cascade_pending = True
            elif isinstance(command, WatchDeadlines):
                self._deadlines_pending = True
            elif isinstance(command, CheckRetries):
                self._next_due = None

    def _timers(self) -> None:
        now = self.clock()
        if now - self._clock_at > CLOCK_REFRESH:
            self._sync_clock()
        if now - self._configs_at > CONFIG_REFRESH:
            self._job("queues", self._refresh_queues)
        self._job("retries", self._promote)
        if self._cascade_pending:
            self._job("cascade", self._cascade)
        if self._deadlines_pending and now - self._deadlines_at > DEADLINE_CHECK:
            self._job("deadlines", self._expire_overdue)
        self._job("unserved", self._warn_unserved)
        self.state.tick(now, IDLE_RECHECK)
        overdue = self.view.overdue(now, self.settings.worker_timeout)
        if overdue:
            self._job("liveness", self._recheck_liveness)
            overdue = self.view.overdue(now, self.settings.worker_timeout)
        for worker in overdue:
            seen_before = int(self.redis_now_ms() - self.settings.worker_timeout * 1000)
            self._job(f"reap {worker.id}", lambda w=worker.id, seen=seen_before: self._reap(
                w, seen_before_ms=seen, why="missed heartbeats"))

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

    def _recheck_liveness(self) -> None:
        """Light heartbeats date a worker in ``workers`` without a signal: read those
        dates (one ZRANGE for all workers) before calling anyone dead."""
        dates = cast(list[tuple[bytes, float]],
                     self.client.zrange(self.keys.workers, 0, -1, withscores=True))
        for member, score in dates:
            view = self.view.workers.get(member.decode())
            if view is not None:
                view.last_seen = max(view.last_seen, self._local_time(score))

    def _local_time(self, redis_ms: float) -> float:
        """Our clock's reading at the Redis time ``redis_ms`` (never later than now)."""
        return self.clock() - max(0.0, self.redis_now_ms() - redis_ms) / 1000

    def _sync_clock(self) -> None:
        seconds, micros = self.client.time()
        self._offset_ms = seconds * 1000 + micros / 1000 - time.time() * 1000
        self._clock_at = self.clock()

    def redis_now_ms(self) -> float:
        return time.time() * 1000 + self._offset_ms

    def _refresh_queues(self) -> None:
        """Read the queue list and every queue's config; queues skipped for trouble are
        tried again."""
        names = sorted(self._queue_list(self.client.smembers(self.keys.queues)))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.queue_conf(name))
        replies = pipe.execute(raise_on_error=False)
        self.state.refreshed({n: self._queue_config(n, h) for n, h in zip(names, replies)})
        self._configs_at = self.clock()

    def _queue_list(self, members: set[bytes]) -> list[str]:
        """The queue names; one that is not UTF-8 names no queue a task could be in (and
        no key we could format): it is moved out of the list, set aside."""
        try:
            return [m.decode() for m in members]
        except UnicodeDecodeError:
            pass
        names = []
        for member in members:
            try:
                names.append(member.decode())
            except UnicodeDecodeError:
                self.aside.move(aside.UNREADABLE, self.keys.queues, "set", member,
                                "a queue name that is not UTF-8: taken out of the queue list")
        return names

    def _queue_config(self, name: str, reply: dict[bytes, bytes] | Exception) -> QueueConfig:
        """A queue's config as read. A setting that is not a number stands at its default,
        reported while it lasts; an unreadable config (its key of the wrong type) is all
        defaults, and the queue gets no standing offer (a small submit reads the key)."""
        key = self.keys.queue_conf(name)
        entry = aside.entry_id(aside.BAD_CONFIG, key)
        if isinstance(reply, Exception):
            if is_outage(reply):
                raise reply
            self._troubled[self.aside.note(
                aside.BAD_CONFIG, key, f"unreadable ({error_message(reply)}): the queue runs"
                " with the default settings", queue=name)] = name
            return QueueConfig(name)
        config, problems = QueueConfig.parse(name, reply)
        if problems:
            self.aside.note(aside.BAD_CONFIG, key, "; ".join(problems), queue=name)
        elif entry in self.aside.noted:
            self._troubled.pop(entry, None)
            self.aside.clear(entry, f"queue={name} has a readable config again")
        return config

    # -- retries, failures, dead workers ---------------------------------------------

    def _promote(self) -> None:
        now = self.redis_now_ms()
        if self._next_due is not None and self._next_due > now:
            return
        moved, self._next_due = self.upkeep.promote(now)
        if moved:
            self.state.stale()

    def _cascade(self) -> None:
        self._cascade_pending = self.upkeep.cascade()

    def _expire_overdue(self) -> None:
        self._deadlines_at = self.clock()
        self._deadlines_pending = self.upkeep.expire_overdue(self.redis_now_ms())

    def _reap(self, worker_id: str, seen_before_ms: int, why: str) -> None:
        if self.token is None:
            return
        requeued, dead, ids = self.upkeep.reap(self.token, worker_id, seen_before_ms)
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
        """Read the queues' heads in one round trip; set aside what cannot be used."""
        pipe = self.client.pipeline(transaction=False)
        for q, n in command.heads:
            pipe.zrange(self.keys.queue(q), 0, n - 1, withscores=True)
        if command.inflight:
            pipe.hgetall(self.keys.inflight)
        rows = pipe.execute(raise_on_error=False)
        inflight = {k.decode(): int(v)
                    for k, v in self._ok(rows.pop() if command.inflight else {}).items()}
        servable = [q for q, _ in command.heads]
        rows = [self._read(q, r) for q, r in zip(servable, rows)]
        cleaned: set[str] = set()  # queues bad members were taken out of, just now
        try:
            ready = {q: [m.decode() for m, _ in r] for q, r in zip(servable, rows) if r}
        except UnicodeDecodeError:
            rows = [self._readable(q, r, cleaned) for q, r in zip(servable, rows)]
            ready = {q: [m.decode() for m, _ in r] for q, r in zip(servable, rows) if r}
        heads = {q: r[0][1] for q, r in zip(servable, rows) if r}
        return QueuesRead(ready, heads, frozenset(cleaned), inflight)

    @staticmethod
    def _ok(reply: Any) -> Any:
        """A pipeline's reply, raised if it is an error (of a key no queue owns)."""
        if isinstance(reply, Exception):
            raise reply
        return reply

    def _read(self, queue: str, reply: list[tuple[bytes, float]] | Exception
              ) -> list[tuple[bytes, float]]:
        """A queue's head as read; on an error reply, nothing, and the queue skipped."""
        if isinstance(reply, Exception):
            self._queue_failed(queue, reply)
            return []
        if self._troubled:
            self._queue_reads(queue)
        return reply

    def _queue_failed(self, queue: str, exc: Exception) -> None:
        """Reading or leasing a queue failed. An outage fails the step; an error about its
        data (its key is of the wrong type, which only an operator can fix: the key is left
        as it is) skips the queue until the next refresh, reported once while it lasts."""
        if is_outage(exc):
            raise exc
        key = self.keys.queue(queue)
        kind = aside.kind_of(exc) if isinstance(exc, redis.ResponseError) else aside.UNUSABLE
        found = self.client.type(key).decode()  # once a refresh at most: it is skipped
        entry = self.aside.note(kind, key, f"{error_message(exc)} (the key is a {found}):"
                                f" queue={queue} is skipped until this is fixed; the key is"
                                " left as it is", queue=queue)
        self._troubled[entry] = queue
        self.state.skip(queue)

    def _queue_reads(self, queue: str, leased: bool = False) -> None:
        """A troubled queue was read (or leased from) again: its trouble is over (a
        failed lease only once a lease succeeds)."""
        key = self.keys.queue(queue)
        for kind in (aside.WRONG_TYPE, aside.UNUSABLE) if leased else (aside.WRONG_TYPE,):
            entry = aside.entry_id(kind, key)
            if self._troubled.pop(entry, None) is not None:
                self.aside.clear(entry, f"queue={queue} is read again")

    def _readable(self, queue: str, rows: list[tuple[bytes, float]], cleaned: set[str]
                  ) -> list[tuple[bytes, float]]:
        """The members that are task ids; the others (not UTF-8: no task could have such
        an id) are moved out of the queue, set aside with their score."""
        kept = []
        for member, score in rows:
            try:
                member.decode()
            except UnicodeDecodeError:
                self.aside.move(aside.UNREADABLE, self.keys.queue(queue), "zset", member,
                                "not a task id (not UTF-8): taken out of the queue", score,
                                queue)
                cleaned.add(queue)
                continue
            kept.append((member, score))
        return kept

    def _settle_idle(self) -> None:
        """Found idle: write what changed of the standing offers, and set the idle key when
        every served queue was read empty, in one round trip (none when nothing changed)."""
        assert self.token is not None
        pipe = self.client.pipeline(transaction=False)
        offers = self.offers.plan(self.state, self.token, frozenset(self._troubled.values()))
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

    def _warn_unserved(self) -> None:
        """Say so when tasks wait in a queue that no registered worker serves."""
        now = self.clock()
        unserved = [q for q in sorted(self.queue_names - self.state.skipped)
                    if not any(w.serves(q) for w in self.view.workers.values())
                    and now - self._unserved_warned.get(q, -UNSERVED_WARNING) >= UNSERVED_WARNING]
        if not unserved:
            return
        pipe = self.client.pipeline(transaction=False)
        for q in unserved:
            pipe.zcard(self.keys.queue(q))
        for q, depth in zip(unserved, pipe.execute(raise_on_error=False)):
            if isinstance(depth, Exception):
                self._queue_failed(q, depth)
            elif depth:
                self._unserved_warned[q] = now
                log.warning("queue=%s has %d ready tasks but no worker serves it"
                            " (start one with: worker start --queue %s)", q, depth, q)

    def _assign(self, command: Assign) -> Assigned:
        """Lease a batch to a worker: how many it took and holds now, n -1 if we lost the
        lead."""
        worker_id, queue, batch = command.worker, command.queue, list(command.task_ids)
        assert self.token is not None
        self._leases_made += 1
        # Leases of a queue without a limit are not counted in inflight ("u"): no one reads it.
        prefix = (f"{self.token.split('|', 1)[0]}.{self._leases_made}"
                  f"{'' if command.limited else 'u'}")
        try:
            n, leased, dropped, deadlines = self.scripts.assign(
                self.token, worker_id, queue, command.room,
                int(self.settings.timeout_grace * 1000), prefix, batch, command.refill_at)
        except redis.ResponseError as exc:
            if is_outage(exc):
                raise
            self._assign_failed(worker_id, queue, batch, exc)
            return Assigned(0, failed=True)
        if self._troubled:
            self._queue_reads(queue, leased=True)
        if self._worker_trouble and worker_id in self._worker_trouble:
            self.aside.clear(self._worker_trouble.pop(worker_id), f"worker={worker_id} leases"
                             " again")
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
        return Assigned(n, leased)

    def _assign_failed(self, worker_id: str, queue: str, batch: list[str],
                       exc: redis.ResponseError) -> None:
        """The lease script failed on data (WRONGTYPE from inside it, say). Find what is
        bad in one round trip, only now: the queue key, task records, or the worker's own
        keys, of the wrong type. Bad tasks are taken out of the queue (their records left
        as they are), set aside, and the rest is leased on the next round; a bad queue is
        skipped; otherwise the worker gets no lease until the next refresh, so that the
        other workers get the work."""
        key, inbox, leases = self.keys.queue(queue), self.keys.inbox(worker_id), \
            self.keys.leases(worker_id)
        pipe = self.client.pipeline(transaction=False)
        for k in (key, inbox, leases):
            pipe.type(k)
        pipe.zmscore(key, batch)
        for task_id in batch:
            pipe.type(self.keys.task(task_id))
        found, inbox_type, leases_type, scores, *types = pipe.execute(raise_on_error=False)
        if self._ok(found) not in (b"zset", b"none"):  # its ZMSCORE failed too
            self._queue_failed(queue, exc)
            return
        bad = [(t, s, self._ok(ty).decode()) for t, s, ty in zip(batch, self._ok(scores), types)
               if ty not in (b"hash", b"none")]
        for task_id, score, kind in bad:
            self.aside.move(aside.WRONG_TYPE, key, "zset", task_id.encode(),
                            f"its record {self.keys.task(task_id)} is a {kind}, not a hash:"
                            " the id was taken out of the queue, the record left as it is",
                            score, queue)
        if bad:
            self.state.retry_soon()  # the rest of the batch
            return
        inbox_type, leases_type = self._ok(inbox_type), self._ok(leases_type)
        wrong = inbox_type not in (b"list", b"none") or leases_type not in (b"set", b"none")
        entry = self.aside.note(
            aside.WRONG_TYPE if wrong else aside.UNUSABLE, inbox,
            f"leasing queue={queue} to worker={worker_id} failed: {error_message(exc)} (its"
            f" inbox is a {inbox_type.decode()}, its leases a {leases_type.decode()}): the"
            " worker gets no work until this is fixed; its keys are left as they are")
        self._worker_trouble[worker_id] = entry
        self.state.shun(worker_id)
