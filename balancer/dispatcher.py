"""The dispatcher loop: the only code that talks to Redis on the balancer's behalf.

It sleeps on the ``wake`` list (BLPOP) and wakes on signals or a short timer; decisions
come from ``balancer.scheduling``, what it believes from ``balancer.view``. It only acts
while it holds the leader lease, and every lease it hands out is checked against that
lease's token inside the script, so a dispatcher that stalled and lost the lease cannot
assign twice.

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
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import redis

from balancer import scheduling
from balancer.common import aside, protocol, signals
from balancer.common.keys import Keys
from balancer.common.models import QueueConfig
from balancer.common.replies import as_bytes, as_bytes_list, as_list, as_opt_bytes, as_scored
from balancer.common.retry import error_code, error_message, is_outage
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.common.signals import Offer
from balancer.setaside import SetAside
from balancer.upkeep import Upkeep
from balancer.view import ClusterView

log = logging.getLogger("balancer.dispatcher")

SIGNAL_BATCH = 1000
CONFIG_REFRESH = 5.0
CLOCK_REFRESH = 60.0
DEADLINE_CHECK = 1.0
ASSIGN_BATCH = 1000
UNSERVED_WARNING = 30.0
# An idle dispatcher reads the queues again this often even without a signal: signals are
# hints, and one lost (pushed while no dispatcher listened, trimmed from a full wake list)
# must cost seconds, never a task left waiting forever.
IDLE_RECHECK = 5.0
# Steps without a failure for this long end an episode of failed steps: failures that come
# and go within it (a step that needs no write succeeds while Redis refuses writes) are one
# episode, logged once.
EPISODE_QUIET = 5.0
# An upkeep job that failed on data (not an outage) is tried again this often.
JOB_RETRY = 5.0


@dataclass
class Episode:
    """A run of failed steps: logged when it starts and when its cause changes, and when
    it ends; never at every failure, which would flood the log at each backoff."""

    cause: str
    outage: bool  # Redis could not serve (the rest: unexpected errors)
    started: float
    last: float
    failures: int = 1


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
        self.view = ClusterView()
        self.token: str | None = None
        self.stopping = threading.Event()
        self.queue_names: set[str] = set()
        self.configs: dict[str, QueueConfig] = {}
        self._renew_at = 0.0
        self._configs_at = 0.0
        self._clock_at = 0.0
        self._offset_ms = 0.0
        self._idle = False  # the last look found every servable queue empty
        self._quiet = False  # the idle key is set: the counts of what workers hold may lag
        self._looked_at = 0.0  # when the last look read the queues
        # Queues the last look read and found empty, and what became ready in them since,
        # when submit signals listed it all (a small flow to an idle cluster): those tasks
        # can be leased without reading the queue again.
        self._seen_empty: frozenset[str] = frozenset()
        self._known: dict[str, list[str]] | None = None
        self._again = False  # work is left that needs no signal to continue
        self._next_due: float | None = None  # Redis ms of the earliest delayed retry
        self._cascade_pending = True
        self._deadlines_at = 0.0
        self._deadlines_pending = True  # running tasks with a timeout may exist
        self._leases_made = 0
        self._unserved_warned: dict[str, float] = {}
        self._offers: dict[str, Offer] = {}  # queue -> the standing offer we wrote
        self._offers_basis: object = None  # what they were computed from
        self.ttl_ms = int(settings.result_ttl * 1000)
        self._episode: Episode | None = None  # failing steps, while they last
        # Upkeep jobs that failed on data: the cause logged, and when to try again.
        self._jobs_failing: dict[str, tuple[str, float]] = {}
        # Open set-aside conditions about a queue (entry id -> queue): no standing offer
        # involves that queue, whose key a small submit's script would trip on too.
        self._troubled: dict[str, str] = {}
        self._skipped: set[str] = set()  # queues not read until the next refresh
        # Workers a lease failed for (their own keys, it seems: entry id), and those given
        # no lease until the next refresh.
        self._worker_trouble: dict[str, str] = {}
        self._shunned: set[str] = set()
        self._bad_epoch: bytes | None = None  # what the epoch key held, if it was no counter

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
            if self._episode is not None and self.clock() - self._episode.last > EPISODE_QUIET:
                self._recovered(self._episode)
        self._resign()
        log.info("dispatcher=%s stopped", self.id)

    def _failed(self, exc: Exception) -> None:
        """A step failed. When Redis cannot serve (unreachable, or an error reply such as
        OOM, READONLY, LOADING, BUSY) the lease may be lost meanwhile: lead again, and
        rebuild the picture, once it serves. Anything else (a bug, a bad entry nothing
        isolated) must not stop the loop either. Logged once per episode and cause."""
        outage = is_outage(exc)
        if outage:
            self.token = None
        self._stale()
        cause = (("unreachable" if not isinstance(exc, redis.ResponseError)
                  else error_code(exc)) if outage else type(exc).__name__)
        now = self.clock()
        episode = self._episode
        if episode is None:
            episode = self._episode = Episode(cause, outage, now, now, 0)
        episode.failures += 1
        episode.last = now
        if episode.failures > 1 and episode.cause == cause:
            log.debug("dispatcher=%s: step failed again (%s: %s)", self.id, cause, exc)
            return
        episode.cause, episode.outage = cause, episode.outage and outage
        if isinstance(exc, redis.ResponseError) and outage:
            log.warning("dispatcher=%s: Redis refuses commands (%s %s); retrying with backoff",
                        self.id, cause, error_message(exc))
        elif outage:
            log.warning("dispatcher=%s lost Redis (%s); retrying with backoff", self.id, exc)
        else:
            log.exception("dispatcher=%s: unexpected error; retrying with backoff", self.id)

    def _recovered(self, episode: Episode) -> None:
        self._episode = None
        what = "Redis serves again" if episode.outage else "steps succeed again"
        log.info("dispatcher=%s: %s, after %d failed steps over %.1fs", self.id, what,
                 episode.failures, episode.last - episode.started)

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
        if self._idle and self.token is not None:
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
            value = as_opt_bytes(self.client.get(self.keys.leader))
            if value is not None and value.decode() == self.token:
                self.client.delete(self.keys.leader)
        except (redis.RedisError, UnicodeDecodeError):
            pass  # the lease runs out on its own
        self.token = None

    def _load(self) -> None:
        """Rebuild the picture from Redis: a new leader trusts nothing it remembered."""
        self._sync_clock()
        self.view = ClusterView()
        self._jobs_failing = {}
        entries = as_scored(self.client.zrange(self.keys.workers, 0, -1, withscores=True))
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.idle)  # first: acks signal again before we count
        self._quiet = False
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
        self._stale()
        self._offers = {}  # ours name an old epoch: submits refuse them until replaced
        self._offers_basis = None
        self._next_due = None
        self._cascade_pending = True
        self._deadlines_pending = True
        log.info("dispatcher=%s loaded %d workers, %d queues", self.id,
                 len(self.view.workers), len(self.queue_names))

    def _adopt(self, records: dict[bytes, bytes]) -> None:
        """Take over the set-aside records of an earlier leader: a queue it skipped for
        trouble is tried again, and its record cleared once it reads."""
        self._troubled, self._worker_trouble = {}, {}
        self._skipped, self._shunned = set(), set()
        for entry, record in self.aside.adopt(records):
            if record.queue and not record.member and record.kind != aside.BAD_CONFIG:
                self._troubled[entry] = record.queue

    # -- signals and timers ----------------------------------------------------------

    def _wait_time(self) -> float:
        if self._again or (self._cascade_pending and "cascade" not in self._jobs_failing):
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
            raw = as_bytes_list(as_list(reply)[1]) if reply else []
        else:
            raw = as_bytes_list(self.client.lpop(self.keys.wake, SIGNAL_BATCH) or [])
        parsed = []
        for item in raw:
            signal = signals.parse(item)
            if signal is None:
                log.warning("ignored unreadable signal %r", item[:80])
            else:
                parsed.append(signal)
        return parsed

    def _knows_empty(self, worker_id: str) -> bool:
        """Every queue the worker serves is known empty."""
        view = self.view.workers.get(worker_id)
        return view is not None and self._all_empty([view])

    def _stale(self) -> None:
        """Queues may hold tasks we were not told of: read them before leasing."""
        self._idle = False
        self._seen_empty = frozenset()
        self._known = None

    def _apply(self, batch: list[signals.Signal]) -> None:
        now = self.clock()
        known = self._known if self._known is not None else {} if self._seen_empty else None
        for s in batch:
            if s.kind == signals.HEARTBEAT:
                new = self.view.heartbeat(s.worker, s.leased, s.blob, now)
                if new is not None:
                    log.info("worker=%s registered: queues=%s capacity=%d", new.id,
                             ",".join(sorted(new.queues)), new.capacity)
                    self._stale()
                    known = None
            elif s.kind == signals.ACK:
                self.view.acked(s.worker, s.leased)
                if s.queued:
                    self._stale()  # its dependents were queued
                elif not self._knows_empty(s.worker):
                    self._idle = False  # a queue it serves may hold tasks for its free slot
                known = None
            elif s.kind == signals.OFFER_TAKEN:
                self.view.offer_taken(s.worker, s.leased)  # the queue is as empty as it was
                self._deadlines_pending = True  # the leases carry timeouts
            elif s.kind == signals.RETRY:
                self._next_due = None  # a retry was scheduled: look at its due time
            elif s.kind == signals.SUBMITTED:
                self._idle = False
                if known is not None and s.ready is not None and s.queues[0] in self._seen_empty:
                    known.setdefault(s.queues[0], []).extend(s.ready)
                else:
                    self._stale()
                    known = None
                if not self.queue_names.issuperset(s.queues):
                    self._configs_at = 0.0  # a queue we do not know yet: read its config
            elif s.kind == signals.QUEUES:
                self._configs_at = 0.0
                self._stale()
                known = None
            elif s.kind == signals.CASCADE:
                self._cascade_pending = True
            elif s.kind == signals.GONE:
                self._job(f"reap {s.worker}", functools.partial(
                    self._reap, s.worker, seen_before_ms=0, why="deregistered"))
                known = None
        self._known = known or None

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
        if self._idle and now - self._looked_at > IDLE_RECHECK:
            self._stale()
        overdue = self.view.overdue(now, self.settings.worker_timeout)
        if overdue:
            self._job("liveness", self._recheck_liveness)
            overdue = self.view.overdue(now, self.settings.worker_timeout)
        for worker in overdue:
            seen_before = int(self.redis_now_ms() - self.settings.worker_timeout * 1000)
            self._job(f"reap {worker.id}", functools.partial(
                self._reap, worker.id, seen_before_ms=seen_before, why="missed heartbeats"))

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
        dates = as_scored(self.client.zrange(self.keys.workers, 0, -1, withscores=True))
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
        names = sorted(self._queue_list(set(as_bytes_list(
            self.client.smembers(self.keys.queues)))))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.queue_conf(name))
        replies = pipe.execute(raise_on_error=False)
        self.configs = {n: self._queue_config(n, h) for n, h in zip(names, replies)}
        self.queue_names = set(names)
        self._skipped, self._shunned = set(), set()
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
            self._stale()

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
        self._stale()
        level = logging.INFO if why == "deregistered" else logging.WARNING
        log.log(level, "worker=%s reaped (%s): requeued=%d quarantined=%d tasks=%s", worker_id,
                why, requeued, dead, ",".join(ids[:20]))

    # -- handing out work ------------------------------------------------------------

    def _config(self, queue: str) -> QueueConfig:
        return self.configs.get(queue, QueueConfig(queue))

    def _dispatch(self) -> None:
        """One round: read the heads of the queues some worker has room for, then lease
        them, highest-ranked queue first, each task to the least-loaded eligible worker."""
        self._again = False
        if self._idle or self.token is None:
            return
        if self._quiet:
            self._recount()
        workers = self._eligible()
        depths = {q: scheduling.queue_depth(q, self.view.mean_duration(q), self.configs,
                                            workers)
                  for q in self.queue_names}
        room = {q: sum(w.free_for(d) for w in workers if w.serves(q))
                for q, d in depths.items()}
        known, self._known = self._known, None
        if known and self._lease_known(known, depths, room):
            return
        servable = sorted(q for q, r in room.items() if r > 0 and q not in self._skipped)
        if not servable:
            return  # nothing can take work; an ack or a new worker will wake us
        pipe = self.client.pipeline(transaction=False)
        for q in servable:
            pipe.zrange(self.keys.queue(q), 0, min(ASSIGN_BATCH, room[q]) - 1, withscores=True)
        limits = any(self._config(q).concurrency_limit is not None for q in servable)
        if limits:
            pipe.hgetall(self.keys.inflight)
        rows = pipe.execute(raise_on_error=False)
        self._looked_at = self.clock()
        inflight = {k.decode(): int(v) for k, v in self._ok(rows.pop() if limits else {}).items()}
        rows = [self._read(q, r) for q, r in zip(servable, rows)]
        cleaned: set[str] = set()  # queues bad members were taken out of, just now
        try:
            ready = {q: [m.decode() for m, _ in r] for q, r in zip(servable, rows) if r}
        except UnicodeDecodeError:
            rows = [self._readable(q, r, cleaned) for q, r in zip(servable, rows)]
            ready = {q: [m.decode() for m, _ in r] for q, r in zip(servable, rows) if r}
        # What we know empty: the queues read empty now, and those not read (no room) that
        # were known empty before (only signals, which reset this, bring new tasks).
        unsure = cleaned | self._skipped  # not empty for all we know
        self._seen_empty = (self._seen_empty - set(servable)) | {
            q for q in servable if q not in ready and q not in unsure}
        if not ready:
            self._idle = not cleaned
            self._again = bool(cleaned)
            return
        heads = {q: r[0][1] for q, r in zip(servable, rows) if r}
        order = scheduling.order_queues(heads, self.configs, self.redis_now_ms(),
                                        self.settings.aging_seconds * 1000)
        assigned, drained = 0, set()
        for q in order:
            limit = scheduling.queue_room(self._config(q), inflight.get(q, 0))
            n = self._lease(q, ready[q] if limit is None else ready[q][:limit], depths[q])
            if n < 0:
                return
            assigned += n
            if n == len(ready[q]) < min(ASSIGN_BATCH, room[q]):
                drained.add(q)  # the read returned all it held, and we leased it all
        self._seen_empty |= drained - cleaned
        # A full batch was taken and a worker still has room: more may be waiting behind it
        # for that room. With every eligible worker full, the next ack signal wakes us.
        self._again = self._again or bool(cleaned) or (assigned > 0 and any(
            len(ready[q]) >= min(ASSIGN_BATCH, room[q])
            and any(w.serves(q) and w.free_for(depths[q]) > 0 for w in workers)
            for q in ready))

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
        found = as_bytes(self.client.type(key)).decode()  # once a refresh at most: skipped
        entry = self.aside.note(kind, key, f"{error_message(exc)} (the key is a {found}):"
                                f" queue={queue} is skipped until this is fixed; the key is"
                                " left as it is", queue=queue)
        self._troubled[entry] = queue
        self._skipped.add(queue)
        self._seen_empty -= {queue}

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

    def _lease_known(self, known: dict[str, list[str]], depths: dict[str, int],
                     room: dict[str, int]) -> bool:
        """Lease the tasks submit signals listed without reading their queues, when those
        queues held nothing else and every listed task fits: then order and limits do not
        matter, and the read would return just these ids. False (nothing done) otherwise,
        and always for tasks of several queues: the read orders queues by priority."""
        if len(known) > 1:
            return False
        for queue, ids in known.items():
            config = self._config(queue)
            if (queue not in self._seen_empty or config.paused or queue in self._skipped
                    or config.concurrency_limit is not None or len(ids) > room.get(queue, 0)):
                return False
        for queue, ids in known.items():
            n = self._lease(queue, ids, depths[queue])
            if n < 0:
                break
            if n < len(ids):
                self._seen_empty -= {queue}  # the refused ones wait in it
        return True

    def _eligible(self) -> list[scheduling.WorkerView]:
        """The workers leases may go to: all but those a lease failed for lately."""
        workers = list(self.view.workers.values())
        return [w for w in workers if w.id not in self._shunned] if self._shunned else workers

    def _all_empty(self, workers: Collection[scheduling.WorkerView]) -> bool:
        """Every queue a worker serves is known empty: no freed slot has work waiting."""
        return all(q in self._seen_empty for q in self.queue_names
                   if any(w.serves(q) for w in workers))

    def _lease(self, queue: str, task_ids: list[str], depth: int) -> int:
        """Lease ready tasks of one queue, each to the least-loaded eligible worker; how
        many were leased, or -1 once we lost the lead."""
        plan = scheduling.plan_batch(queue, task_ids, self._eligible(),
                                     self.rng, depth)
        leased = 0
        for worker_id, batch in plan.items():
            n = self._assign(worker_id, queue, batch, depth)
            if n < 0:
                return -1
            leased += n
        return leased

    def _settle_idle(self) -> None:
        """Found idle: write what changed of the standing offers, and set the idle key when
        every served queue was read empty, in one round trip (none when nothing changed)."""
        pipe = self.client.pipeline(transaction=False)
        offers = self._post_offers(pipe)
        # Quiet only when no queue went unread for want of room: its tasks need the slots
        # acks free.
        quiet = not self._quiet and self._all_empty(self.view.workers.values())
        if quiet:
            pipe.set(self.keys.idle, 1)
        if len(pipe):
            pipe.execute()
        if offers is not None:
            self._offers, self._offers_basis = offers  # only once written
        self._quiet = self._quiet or quiet

    def _recount(self) -> None:
        """Leave quiet: delete the idle key, then read what the workers that held leases
        hold now (their acks may have been silent), in one round trip. (A count too low,
        of a worker that took an offer, costs at most a refused assign: see _assign.)"""
        stale = [w for w in self.view.workers.values() if w.leased > 0]
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.idle)  # first: acks signal again before we count
        for view in stale:
            pipe.scard(self.keys.leases(view.id))
        for view, held in zip(stale, pipe.execute()[1:]):
            self.view.acked(view.id, int(held))
        self._quiet = False

    def _post_offers(self, pipe: redis.client.Pipeline
                     ) -> tuple[dict[str, Offer], object] | None:
        """Stand an offer for each queue read empty: the workers its next small submit
        leases to itself (submit_small.lua), saving the hop through us. Written (into
        ``pipe``) only when it changes; kept while a queue fills (the script refuses it
        then: the queue is not empty); withdrawn when no worker serves it or the queue is
        paused or limited. The offers and their basis to remember once written, if new."""
        assert self.token is not None
        troubled = frozenset(self._troubled.values())
        basis = (self.token, self.view.version, self._seen_empty, tuple(self.configs.values()),
                 troubled, frozenset(self._shunned))
        if basis == self._offers_basis:
            return None
        epoch = self.token.split("|", 1)[0]
        workers = self._eligible()
        wanted = {}
        for q in sorted(self.queue_names):
            config = self._config(q)
            current = self._offers.get(q)
            if config.paused or config.concurrency_limit is not None or q in troubled:
                continue
            if q not in self._seen_empty:
                if current is not None:
                    wanted[q] = current
                continue
            before = {w: h for w, _, h in current.workers} if current is not None else {}
            offered = scheduling.offer_workers(q, workers, before)
            others = frozenset().union(*(w.queues for w in offered)) - {q}
            # A submit taking it reads the others' keys too: none may be troubled.
            if offered and not others & troubled:
                wanted[q] = Offer(epoch, tuple((w.id, w.capacity,
                                                scheduling.offered_host_load(w, before.get(w.id)))
                                               for w in offered), tuple(sorted(others)))
        for q, offer in wanted.items():
            if self._offers.get(q) != offer:
                pipe.set(self.keys.offer(q), offer.encode())
        for q in self._offers.keys() - wanted.keys():
            pipe.delete(self.keys.offer(q))
        return wanted, basis

    def _warn_unserved(self) -> None:
        """Say so when tasks wait in a queue that no registered worker serves."""
        now = self.clock()
        unserved = [q for q in sorted(self.queue_names - self._skipped)
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

    def _assign(self, worker_id: str, queue: str, batch: list[str], depth: int) -> int:
        """Lease ``batch`` to the worker; how many it took, or -1 if we lost the lead."""
        view = self.view.workers[worker_id]
        assert self.token is not None
        self._leases_made += 1
        limited = self._config(queue).concurrency_limit is not None
        # Leases of a queue without a limit are not counted in inflight: no one reads it.
        prefix = protocol.lease_prefix(protocol.leader_epoch(self.token), self._leases_made,
                                       counted=limited)
        try:
            n, leased, dropped, deadlines = self.scripts.assign(
                self.token, worker_id, queue, view.capacity * depth,
                int(self.settings.timeout_grace * 1000), prefix, batch, view.refill_at(depth),
                depth)
        except redis.ResponseError as exc:
            if is_outage(exc):
                raise
            self._assign_failed(worker_id, queue, batch, exc)
            return 0
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
            return -1
        if n < len(batch) and leased > view.leased:
            # It held more than we knew (a submit leased to it by our offer, which we learn
            # of at its next ack): what it refused may fit another worker. Plan again now.
            self._again = True
        view.leased = leased
        if deadlines:
            self._deadlines_pending = True
        if n:
            log.info("assigned %d tasks of queue=%s to worker=%s: %s", n, queue, worker_id,
                     ",".join(batch[:n][:10]))
        return n

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
            self._again = True  # the rest of the batch
            return
        inbox_type, leases_type = self._ok(inbox_type), self._ok(leases_type)
        wrong = inbox_type not in (b"list", b"none") or leases_type not in (b"set", b"none")
        entry = self.aside.note(
            aside.WRONG_TYPE if wrong else aside.UNUSABLE, inbox,
            f"leasing queue={queue} to worker={worker_id} failed: {error_message(exc)} (its"
            f" inbox is a {inbox_type.decode()}, its leases a {leases_type.decode()}): the"
            " worker gets no work until this is fixed; its keys are left as they are")
        self._worker_trouble[worker_id] = entry
        self._shunned.add(worker_id)
