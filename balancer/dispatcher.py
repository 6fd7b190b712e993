"""The dispatcher loop: the only code that talks to Redis on the balancer's behalf.

It sleeps on the ``wake`` list (BLPOP) and wakes on signals or a short timer; decisions
come from ``balancer.scheduling``, what it believes from ``balancer.view``. It only acts
while it holds the leader lease, and every lease it hands out is checked against that
lease's token inside the script, so a dispatcher that stalled and lost the lease cannot
assign twice.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable, Collection
from typing import cast

import redis

from balancer import scheduling
from balancer.common import signals
from balancer.common.keys import Keys
from balancer.common.models import QueueConfig
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.common.signals import Offer
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
        self.upkeep = Upkeep(client, self.keys, self.scripts, settings)
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

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        log.info("dispatcher=%s starting on namespace=%s", self.id, self.settings.namespace)
        backoff = 0.1
        while not self.stopping.is_set():
            try:
                self.step()
                backoff = 0.1
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("dispatcher=%s lost Redis (%s); retrying in %.1fs", self.id, exc,
                            backoff)
                self.token = None
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
            except Exception:
                # A bug or a corrupt record must not take the dispatcher down: log, pause, go on.
                log.exception("dispatcher=%s: unexpected error; continuing", self.id)
                self._stale()
                self.stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self._resign()
        log.info("dispatcher=%s stopped", self.id)

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
        token = self.scripts.leader(self.id, int(self.settings.leader_ttl * 1000))
        if token is None:
            if self.token is not None:
                log.warning("dispatcher=%s lost the leader lease", self.id)
            self.token = None
            return False
        if token != self.token:
            log.info("dispatcher=%s leads with epoch=%s", self.id, token.split("|", 1)[0])
            self.token = token
            self._load()
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
        except (redis.ConnectionError, redis.TimeoutError):
            pass
        self.token = None

    def _load(self) -> None:
        """Rebuild the picture from Redis: a new leader trusts nothing it remembered."""
        self._sync_clock()
        self.view = ClusterView()
        entries = self.client.zrange(self.keys.workers, 0, -1, withscores=True)
        pipe = self.client.pipeline(transaction=False)
        pipe.delete(self.keys.idle)  # first: acks signal again before we count
        self._quiet = False
        for member, _ in entries:
            wid = member.decode()
            pipe.hget(self.keys.worker(wid), "info")
            pipe.scard(self.keys.leases(wid))
        replies = pipe.execute()[1:]
        for i, (member, score) in enumerate(entries):
            wid, info, leased = member.decode(), replies[2 * i], replies[2 * i + 1]
            seen = self._local_time(score)
            if info is None or self.view.heartbeat(wid, int(leased), info, seen) is None:
                view = scheduling.WorkerView(wid, frozenset(), 0, int(leased), last_seen=seen)
                self.view.workers[wid] = view
        self._refresh_queues()
        self._stale()
        self._offers = {}  # ours name an old epoch: submits refuse them until replaced
        self._offers_basis = None
        self._next_due = None
        self._cascade_pending = True
        self._deadlines_pending = True
        log.info("dispatcher=%s loaded %d workers, %d queues", self.id,
                 len(self.view.workers), len(self.queue_names))

    # -- signals and timers ----------------------------------------------------------

    def _wait_time(self) -> float:
        if self._again or self._cascade_pending:
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
                self.view.holds(s.worker, s.leased)  # the queue is as empty as it was
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
                self._reap(s.worker, seen_before_ms=0, why="deregistered")
                known = None
        self._known = known or None

    def _timers(self) -> None:
        now = self.clock()
        if now - self._clock_at > CLOCK_REFRESH:
            self._sync_clock()
        if now - self._configs_at > CONFIG_REFRESH:
            self._refresh_queues()
        self._promote()
        if self._cascade_pending:
            self._cascade()
        if self._deadlines_pending and now - self._deadlines_at > DEADLINE_CHECK:
            self._expire_overdue()
        self._warn_unserved()
        if self._idle and now - self._looked_at > IDLE_RECHECK:
            self._stale()
        overdue = self.view.overdue(now, self.settings.worker_timeout)
        if overdue:
            self._recheck_liveness()
            overdue = self.view.overdue(now, self.settings.worker_timeout)
        for worker in overdue:
            seen_before = int(self.redis_now_ms() - self.settings.worker_timeout * 1000)
            self._reap(worker.id, seen_before_ms=seen_before, why="missed heartbeats")

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
        names = sorted(m.decode() for m in self.client.smembers(self.keys.queues))
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.queue_conf(name))
        self.configs = {n: QueueConfig.from_hash(n, h) for n, h in zip(names, pipe.execute())}
        self.queue_names = set(names)
        self._configs_at = self.clock()

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
        workers = list(self.view.workers.values())
        depths = {q: scheduling.queue_depth(q, self.view.mean_duration(q), self.configs,
                                            workers)
                  for q in self.queue_names}
        room = {q: sum(w.free_for(d) for w in workers if w.serves(q))
                for q, d in depths.items()}
        known, self._known = self._known, None
        if known and self._lease_known(known, depths, room):
            return
        servable = sorted(q for q, r in room.items() if r > 0)
        if not servable:
            return  # nothing can take work; an ack or a new worker will wake us
        pipe = self.client.pipeline(transaction=False)
        for q in servable:
            pipe.zrange(self.keys.queue(q), 0, min(ASSIGN_BATCH, room[q]) - 1, withscores=True)
        limits = any(self._config(q).concurrency_limit is not None for q in servable)
        if limits:
            pipe.hgetall(self.keys.inflight)
        rows = pipe.execute()
        self._looked_at = self.clock()
        inflight = {k.decode(): int(v) for k, v in (rows.pop() if limits else {}).items()}
        ready = {q: [m.decode() for m, _ in r] for q, r in zip(servable, rows) if r}
        # What we know empty: the queues read empty now, and those not read (no room) that
        # were known empty before (only signals, which reset this, bring new tasks).
        self._seen_empty = (self._seen_empty - set(servable)) | {
            q for q in servable if q not in ready}
        if not ready:
            self._idle = True
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
        self._seen_empty |= drained
        # A full batch was taken and a worker still has room: more may be waiting behind it
        # for that room. With every eligible worker full, the next ack signal wakes us.
        self._again = self._again or (assigned > 0 and any(
            len(ready[q]) >= min(ASSIGN_BATCH, room[q])
            and any(w.serves(q) and w.free_for(depths[q]) > 0 for w in self.view.workers.values())
            for q in ready))

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
            if (queue not in self._seen_empty or config.paused
                    or config.concurrency_limit is not None or len(ids) > room.get(queue, 0)):
                return False
        for queue, ids in known.items():
            n = self._lease(queue, ids, depths[queue])
            if n < 0:
                break
            if n < len(ids):
                self._seen_empty -= {queue}  # the refused ones wait in it
        return True

    def _all_empty(self, workers: Collection[scheduling.WorkerView]) -> bool:
        """Every queue a worker serves is known empty: no freed slot has work waiting."""
        return all(q in self._seen_empty for q in self.queue_names
                   if any(w.serves(q) for w in workers))

    def _lease(self, queue: str, task_ids: list[str], depth: int) -> int:
        """Lease ready tasks of one queue, each to the least-loaded eligible worker; how
        many were leased, or -1 once we lost the lead."""
        plan = scheduling.plan_batch(queue, task_ids, list(self.view.workers.values()),
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
        basis = (self.token, self.view.version, self._seen_empty, tuple(self.configs.values()))
        if basis == self._offers_basis:
            return None
        epoch = self.token.split("|", 1)[0]
        workers = list(self.view.workers.values())
        wanted = {}
        for q in sorted(self.queue_names):
            config = self._config(q)
            current = self._offers.get(q)
            if config.paused or config.concurrency_limit is not None:
                continue
            if q not in self._seen_empty:
                if current is not None:
                    wanted[q] = current
                continue
            before = {w: h for w, _, h in current.workers} if current is not None else {}
            offered = scheduling.offer_workers(q, workers, before)
            if offered:
                others = frozenset().union(*(w.queues for w in offered)) - {q}
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
        unserved = [q for q in sorted(self.queue_names)
                    if not any(w.serves(q) for w in self.view.workers.values())
                    and now - self._unserved_warned.get(q, -UNSERVED_WARNING) >= UNSERVED_WARNING]
        if not unserved:
            return
        pipe = self.client.pipeline(transaction=False)
        for q in unserved:
            pipe.zcard(self.keys.queue(q))
        for q, depth in zip(unserved, pipe.execute()):
            if depth:
                self._unserved_warned[q] = now
                log.warning("queue=%s has %d ready tasks but no worker serves it"
                            " (start one with: worker start --queue %s)", q, depth, q)

    def _assign(self, worker_id: str, queue: str, batch: list[str], depth: int) -> int:
        """Lease ``batch`` to the worker; how many it took, or -1 if we lost the lead."""
        view = self.view.workers[worker_id]
        assert self.token is not None
        self._leases_made += 1
        limited = self._config(queue).concurrency_limit is not None
        # Leases of a queue without a limit are not counted in inflight ("u"): no one reads it.
        prefix = f"{self.token.split('|', 1)[0]}.{self._leases_made}{'' if limited else 'u'}"
        n, leased, dropped, deadlines = self.scripts.assign(
            self.token, worker_id, queue, view.capacity * depth,
            int(self.settings.timeout_grace * 1000), prefix, batch, view.refill_at(depth))
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
