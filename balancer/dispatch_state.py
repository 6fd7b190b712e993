"""What the dispatcher believes about its queues, as a pure state machine: no Redis, no clock.

The dispatcher (``balancer.dispatcher``) is an I/O shell around this. It feeds events in
(signals, what a queue read returned, what a lease call returned, that the idle key was
set) and executes the commands they return (``Recount``, ``ReadQueues``, ``Assign``, and
for signals ``Reap``, ``RefreshQueues``, ``RunCascade``, ``WatchDeadlines``,
``CheckRetries``). Whom a task goes to is ``scheduling.plan_batch``'s choice, made by the
view's index of the workers with room (``rooms.RoomIndex``) so that a round weighs only
the workers it leases to, not every worker of the partition.

One ``Mode`` replaces the near-synonym flags the loop used to carry:

    ACTIVE   work may be waiting: a round reads the queues (or leases listed ids)
    IDLE     the last look found every servable queue empty: rounds do nothing
    QUIET    idle, and the ``idle`` key is set: acks that free a slot say nothing
    WAKING   the ``idle`` key is set but work came: a round recounts the workers first

``empty`` holds the queues known empty (read empty, and no signal since said otherwise);
``listed`` the ids small submits made ready in them, which a round may lease without
reading the queue (only when one queue got them all and they all fit). A round reads only
the queues not known empty: a signal that names the queues it filled (a submit, an ack
that queued dependents) makes just those unknown, one that does not (a reap, a retry
promoted, a worker's shutdown) all of them. Signals are hints, and some are lost (the wake
list drops its oldest past its cap): every ``recheck`` the state forgets what it knew
empty, busy or idle, so that a task queued unannounced waits seconds, never for good.
(Reading every queue at every round cost 75 ms of the dispatcher's CPU per single-task
flow at 3,000 queues, one per tenant.)

Tag limits (balancer/taglimits.py): while some tag has one, a read also asks for the tags of
the ids read and the leases counted per tag, and ``scheduling.admit_tagged`` passes over
the tasks whose tag is at its limit. So that those do not hold up the tasks behind them, a
queue's next read asks for as many more ids as the last one passed over.

With ``validate`` set (tests), ``validate()`` checks the invariants after every event,
as Dask's worker state machine does; the dispatcher runs without it.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field

from balancer import scheduling
from balancer.common import prefetch, signals
from balancer.common.models import QueueConfig
from balancer.scheduling import WorkerView
from balancer.view import ClusterView

log = logging.getLogger("balancer.dispatcher")

ASSIGN_BATCH = 1000
# Lease the ids a small submit's signal listed without reading their queue (see
# ``_fits``). Off, such a submit is read from its queue like any other. It saves a round
# trip only for small submits that take no standing offer (a client under the client ACL
# user never does): with the client taking no offers, single-task latency p50 was 2.46 ms
# with it and 2.94 ms without (cluster_bench --no-offers, 10 interleaved runs each, on a
# shared 2-core machine); with offers, no difference either way.
LEASE_LISTED = True


# A queue read with at most this many ids has them remembered (``DispatchState.heads``).
CACHED_IDS = 64


@dataclass(frozen=True)
class Head:
    """What a read found at the head of a queue: its first ids, the first one's score,
    and whether that was all the queue held."""

    ids: tuple[str, ...]
    score: float
    complete: bool


class Mode(enum.Enum):
    ACTIVE = "active"
    IDLE = "idle"
    QUIET = "quiet"
    WAKING = "waking"


# -- commands: what the shell is to do --------------------------------------------------


@dataclass(frozen=True)
class Recount:
    """Delete the idle key, then read what these workers hold (SCARD of their leases)."""

    workers: tuple[str, ...]


@dataclass(frozen=True)
class ReadQueues:
    """Read the head (this many members, with scores) of each queue, and ``inflight``
    if a limited queue is among them; with ``tags`` (some tag has a limit), the tags of
    the ids read and ``tag-inflight`` too."""

    heads: tuple[tuple[str, int], ...]
    inflight: bool
    tags: bool = False


@dataclass(frozen=True)
class Assign:
    """Lease ``task_ids`` of ``queue`` to ``worker`` (assign.lua)."""

    worker: str
    queue: str
    task_ids: tuple[str, ...]
    room: int  # the places the worker has in all: capacity * depth
    refill_at: int
    limited: bool  # the queue has a concurrency limit: count the leases in inflight
    depth: int = 1  # tasks per slot (the lease carries it: a pool child batches by it)
    # Per task, the limited tags its lease counts against, comma-joined ('' none); empty
    # when no task of the batch has any.
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reap:
    worker: str


@dataclass(frozen=True)
class RefreshQueues:
    """Read the queue list and configs at the next timer turn; with ``queues`` (new ones
    a submit named), only those queues' configs."""

    queues: frozenset[str] = frozenset()


@dataclass(frozen=True)
class RunCascade:
    pass


@dataclass(frozen=True)
class WatchDeadlines:
    pass


@dataclass(frozen=True)
class CheckRetries:
    """A retry was scheduled: look at the earliest due time again."""


@dataclass(frozen=True)
class CheckSchedules:
    """A schedule was added or changed: look at the earliest due time again."""


Command = Recount | ReadQueues | Assign
SignalCommand = (Reap | RefreshQueues | RunCascade | WatchDeadlines | CheckRetries
                 | CheckSchedules)


# -- events that are records -------------------------------------------------------------


@dataclass(frozen=True)
class QueuesRead:
    """What a ``ReadQueues`` found: the readable ids of each queue that held some, each
    such queue's head score, the queues bad members were just taken out of, and the
    leases counted per limited queue; when tags were asked for, the tags of each id read
    that has some, and the leases counted per tag."""

    ready: dict[str, list[str]]
    heads: dict[str, float]
    cleaned: frozenset[str] = frozenset()
    inflight: dict[str, int] = field(default_factory=dict)
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tag_leased: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Assigned:
    """What an ``Assign`` did: how many it leased (-1: we lost the lead) and how many the
    worker holds now (its truth, counted by the script). ``failed``: the script tripped
    on data, nothing leased (the shell set aside what it found)."""

    n: int
    held: int = 0
    failed: bool = False


@dataclass
class Round:
    """One dispatch round in progress: what it weighed at its start, and its leases."""

    depths: dict[str, int]
    room: dict[str, int]
    listed: bool = False
    ready: dict[str, list[str]] = field(default_factory=dict)
    inflight: dict[str, int] = field(default_factory=dict)
    asked: dict[str, int] = field(default_factory=dict)  # ids each queue's read asked for
    cached: dict[str, Head] = field(default_factory=dict)  # the queues not read: as remembered
    tags: dict[str, tuple[str, ...]] = field(default_factory=dict)
    tag_leased: dict[str, int] = field(default_factory=dict)  # with this round's leases
    tagged: dict[str, str] = field(default_factory=dict)  # id -> tags its lease counts
    cleaned: frozenset[str] = frozenset()
    order: list[str] = field(default_factory=list)  # queues still to lease, best first
    queue: str | None = None  # the one being leased
    batch: list[str] = field(default_factory=list)
    plan: list[tuple[str, list[str]]] = field(default_factory=list)
    worker: str = ""  # the last Assign's
    size: int = 0
    leased: int = 0  # of the current queue
    assigned: int = 0
    drained: set[str] = field(default_factory=set)


class DispatchState:
    """The dispatcher's beliefs (workers, queue configs, what is known empty) and the
    round in progress. Every public method is an event; those that need I/O next return
    the command for it, so the whole behaviour can be driven and checked from a list of
    events, without Redis."""

    def __init__(self, rng: random.Random | None = None, *, aging_ms: float = 60_000,
                 validate: bool = False, view: ClusterView | None = None) -> None:
        self.rng = rng or random.Random()
        self.aging_ms = aging_ms
        self.validating = validate
        self.view = view or ClusterView()
        self.configs: dict[str, QueueConfig] = {}
        self.configs_version = 0  # bumped when the configs changed: the offers weigh them
        self._configs_reread = 0  # bumped when a refresh read other configs than we had
        self._top: int | None = None  # the highest priority of the configs
        self.queue_names: set[str] = set()
        # Each queue's prefetch depth as last weighed (``depths``), what it was weighed
        # against (configs, each worker's highest priority), and a count bumped when a
        # depth changed: what the standing offers weigh, without weighing every queue.
        self._depths: dict[str, int] = {}
        self._depths_basis: object = None
        self._highest: prefetch.Highest = ()
        self.depths_version = 0
        self.tag_limits: dict[str, int] = {}
        # Per queue, how many ids its last read passed over for tag limits: its next read
        # asks for that many more, to reach the tasks behind them.
        self.passed_over: dict[str, int] = {}
        self.mode = Mode.ACTIVE
        self.empty: frozenset[str] = frozenset()
        self.listed: dict[str, list[str]] | None = None
        self.heads: dict[str, Head] = {}
        self.again = False  # work is left that needs no signal to continue
        self.looked_at = 0.0  # when a round last read the queues
        self.forgot_at = 0.0  # when ``tick`` last forgot what was known empty
        self.skipped: set[str] = set()  # queues not read until the next refresh
        self.shunned: set[str] = set()  # workers given no lease until the next refresh
        self.round: Round | None = None
        # The queues the last round found no room for and does not know empty: their
        # tasks wait for room, which an ack or a new worker signals (balancer/dispatcher.py
        # tells submits so: backlog:<queue>).
        self.backlogged: frozenset[str] = frozenset()

    # -- reading the mode ----------------------------------------------------------

    @property
    def idle(self) -> bool:
        return self.mode in (Mode.IDLE, Mode.QUIET)

    @property
    def quiet(self) -> bool:
        """The idle key is set (by us): the counts of what workers hold may lag."""
        return self.mode in (Mode.QUIET, Mode.WAKING)

    def config(self, queue: str) -> QueueConfig:
        return scheduling.config_of(self.configs, queue)

    def eligible(self) -> list[WorkerView]:
        """The workers leases may go to: all but those a lease failed for lately."""
        workers = list(self.view.workers.values())
        return [w for w in workers if w.id not in self.shunned] if self.shunned else workers

    def all_empty(self, serves: Callable[[str], bool]) -> bool:
        """Every queue ``serves`` says yes to is known empty: no freed slot has work
        waiting. (Asked at every ack: only the queues not known empty are weighed.)"""
        return not any(serves(q) for q in self.queue_names - self.empty)

    def knows_empty(self, worker_id: str) -> bool:
        view = self.view.workers.get(worker_id)
        return view is not None and self.all_empty(view.serves)

    # -- events that change what may be waiting ------------------------------------

    def stale(self) -> None:
        """Queues may hold tasks we were not told of: read them before leasing."""
        self._wake()
        self.empty = frozenset()
        self.listed = None
        self.heads = {}
        self._check()

    def cut(self) -> None:
        """End the round before its plan is done (the shell must renew its lease first: a
        round of a thousand one-task leases can outlast it). What it did not lease stays
        in its queues, read again at once."""
        self.round = None
        self.stale()
        self.again = True
        self._check()

    def _wake(self) -> None:
        if self.mode is Mode.IDLE:
            self.mode = Mode.ACTIVE
        elif self.mode is Mode.QUIET:
            self.mode = Mode.WAKING

    def deaf(self) -> None:
        """The wake list cannot be read (a key of another type): no signal comes, acks
        included. Read every queue, and count what the workers hold (a recount, as when
        waking), before leasing, at every round while it lasts."""
        self.round = None
        self.stale()
        self.mode = Mode.WAKING
        self._check()

    def reset(self) -> None:
        """A new leader: it deleted the idle key and trusts nothing it remembered."""
        self.mode = Mode.ACTIVE
        self.round = None
        self.stale()

    def tick(self, now: float, recheck: float) -> None:
        """Signals are hints: an idle dispatcher reads its queues again every ``recheck``,
        and a busy one, which reads only those not known empty, forgets which those are
        as often."""
        if (now - self.looked_at > recheck if self.idle
                else self.empty and now - self.forgot_at > recheck):
            self.forgot_at = now
            self.stale()

    def skip(self, queue: str) -> None:
        """A queue's key is unusable: not read (nor known empty) until the next refresh."""
        self.skipped.add(queue)
        self.empty -= {queue}
        self.heads.pop(queue, None)
        if self.listed is not None and queue in self.listed:
            self._unlisted(self.listed)
            self.listed = None
        self._check()

    def _unlisted(self, listed: dict[str, list[str]] | None) -> None:
        """Listed ids are dropped: their queues are no longer known to hold just those,
        and are read."""
        if listed:
            self.empty -= listed.keys()

    def shun(self, worker: str) -> None:
        self.shunned.add(worker)

    def retry_soon(self) -> None:
        """Bad entries were taken out mid-round: lease the rest at once."""
        self.again = True

    def refreshed(self, configs: dict[str, QueueConfig],
                  tag_limits: dict[str, int] | None = None) -> None:
        """Queue list and configs (and tag limits) read again: skipped queues and shunned
        workers are tried again."""
        if configs != self.configs:
            self.configs_version += 1
            self._configs_reread += 1
        self.configs = configs
        self.queue_names = set(configs)
        self._top = max((c.priority for c in configs.values()), default=None)
        self.tag_limits = tag_limits or {}
        if not self.tag_limits:
            self.passed_over = {}
        self.skipped, self.shunned = set(), set()
        self._check()

    def added(self, configs: dict[str, QueueConfig]) -> None:
        """Queues new to us (a submit named them), read: known from now on. Only their
        depths are weighed anew, unless one outranks the queues of a worker serving it
        (each worker's highest priority is the depths' basis): a queue per tenant then
        costs its own read, not one of every queue."""
        new = {name: c for name, c in configs.items() if name not in self.configs}
        if not new:
            return
        self.configs = {**self.configs, **new}
        self.queue_names.update(new)
        self._top = max([c.priority for c in new.values()]
                        + ([] if self._top is None else [self._top]))
        self.configs_version += 1
        for name in new:
            self._depths.pop(name, None)
        self._check()

    def idle_set(self) -> None:
        """The shell set the idle key (``wants_quiet``)."""
        if self.mode is Mode.IDLE:
            self.mode = Mode.QUIET
        self._check()

    def wants_quiet(self) -> bool:
        """Idle, and every queue any worker serves was read empty (none went unread for
        want of room: its tasks need the slots that acks free)."""
        return self.mode is Mode.IDLE and self.all_empty(self.view.rooms.served)

    # -- signals ---------------------------------------------------------------------

    def apply(self, batch: list[signals.Signal], now: float) -> Iterator[SignalCommand]:
        """Apply a batch of signals, yielding what the shell must do on the way (a reap
        runs before the signals after it are applied)."""
        known = self.listed if self.listed is not None else {} if self.empty else None
        for s in batch:
            if s.kind == signals.HEARTBEAT:
                new = self.view.heartbeat(s.worker, s.leased, s.blob, now)
                if new is not None:
                    log.info("worker=%s registered: queues=%s capacity=%d", new.id,
                             ",".join(sorted(new.queues)), new.capacity)
                    self.stale()
                    known = None
            elif s.kind == signals.ACK:
                self.view.acked(s.worker, s.leased)
                if s.queued:
                    self.stale()  # it may have queued tasks: in which queues, it does not say
                elif not self.knows_empty(s.worker):
                    self._wake()  # a queue it serves may hold tasks for its free slot
                self._unlisted(known)
                known = None
            elif s.kind == signals.OFFER_TAKEN:
                self.view.offer_taken(s.worker, s.leased)  # the queue is as empty as it was
                yield WatchDeadlines()  # the leases carry timeouts
            elif s.kind == signals.RETRY:
                yield CheckRetries()
            elif s.kind == signals.SCHEDULES:
                yield CheckSchedules()
            elif s.kind == signals.SUBMITTED:
                self._wake()
                if known is not None and s.ready is not None and s.queues[0] in self.empty:
                    known.setdefault(s.queues[0], []).extend(s.ready)
                elif s.queues:  # those queues hold tasks now; the others are as they were
                    if known is not None and not known.keys().isdisjoint(s.queues):
                        self._unlisted(known)
                        known = None
                    self.empty -= set(s.queues)
                    for q in s.queues:
                        self.heads.pop(q, None)
                else:
                    self.stale()
                    known = None
                if not self.queue_names.issuperset(s.queues):
                    # A queue we do not know yet: read its config.
                    yield RefreshQueues(frozenset(s.queues).difference(self.queue_names))
            elif s.kind == signals.QUEUES:
                yield RefreshQueues()
                self.stale()
                known = None
            elif s.kind == signals.CASCADE:
                yield RunCascade()
            elif s.kind == signals.GONE:
                yield Reap(s.worker)
                known = None
        self.listed = known or None
        self._check()

    # -- a dispatch round --------------------------------------------------------------

    def begin_round(self) -> Command | None:
        """Start a round: recount first when waking, else weigh the room and read."""
        self.again = False
        self.round = None
        self.backlogged = frozenset()
        if self.idle:
            return None
        if self.mode is Mode.WAKING:
            return Recount(tuple(w.id for w in self.view.workers.values() if w.leased > 0))
        return self._plan()

    def recounted(self, held: dict[str, int]) -> Command | None:
        """The idle key is deleted and the workers counted: acks signal again."""
        for worker, n in held.items():
            self.view.acked(worker, n)
        self.mode = Mode.ACTIVE
        self._check()
        return self._plan()

    def depths(self, queues: Collection[str] | None = None) -> dict[str, int]:
        """The prefetch per slot now (``prefetch.queue_depth``) of each queue of ``queues``
        (default: every queue)."""
        self.weigh_depths()
        wanted = self.queue_names if queues is None else queues
        unknown = [q for q in wanted if q not in self._depths]  # not a queue of ours
        if unknown:
            self._weigh(unknown, {})
        return {q: self._depths[q] for q in wanted}

    def weigh_depths(self) -> None:
        """Weigh the queues' depths again where they may have changed (``depths_version``
        tells when one did): only the queues whose mean run time changed, and all of them
        when the configs or the sets of queues served did. A round then costs what it
        reads, not how many queues there are."""
        shapes = self.view.rooms.shapes(self.shunned)
        self._highest = prefetch.highest_priorities(self.configs, shapes, self._top)
        basis = (self._configs_reread, frozenset(self._highest))
        changed = self.view.means_changed
        if basis != self._depths_basis:
            before, self._depths, self._depths_basis = self._depths, {}, basis
            self._weigh(self.queue_names, before)
        elif changed:
            before = {q: self._depths.pop(q) for q in changed if q in self._depths}
            self._weigh(before, before)
        changed.clear()

    def _weigh(self, queues: Collection[str], before: dict[str, int]) -> None:
        if not queues:
            return
        mean = self.view.mean_duration
        fresh = scheduling.queue_depths({q: mean(q) for q in queues}, self.configs, (),
                                        self._highest)
        if any(before.get(q) != d for q, d in fresh.items()):
            self.depths_version += 1
        self._depths.update(fresh)

    def _plan(self) -> Command | None:
        rooms, shunned = self.view.rooms, self.shunned
        known, self.listed = self.listed, None
        # The queues that may hold tasks, and those that got the listed ids.
        unsure = self.queue_names - self.empty - self.skipped
        depths = self.depths(unsure.union(known) if known else unsure)
        room = rooms.rooms(depths, shunned)
        rnd = self.round = Round(depths, room)
        if known and LEASE_LISTED and self._fits(known, room):
            [(queue, ids)] = known.items()
            rnd.listed, rnd.ready, rnd.order = True, {queue: ids}, [queue]
            return self._next()
        self._unlisted(known)
        servable = sorted(q for q, r in room.items() if r > 0 and q not in self.skipped)
        if not servable:
            self.round = None
            if self._room_in_empty():
                self.mode = Mode.IDLE  # a read of every queue with room would find none
            # Nothing can take work; an ack or a new worker will wake us.
            self.backlogged = frozenset(self.queue_names - self.empty - self.skipped)
            self._check()
            return None
        rnd.order = servable
        limits = any(self.config(q).concurrency_limit is not None for q in servable)
        tags = bool(self.tag_limits)
        rnd.asked = {q: min(ASSIGN_BATCH, room[q] + (self.passed_over.get(q, 0) if tags else 0))
                     for q in servable}
        # A queue read since with no signal about it nor a lease from it holds what it
        # held: a backlog spread over thousands of queues costs the queues a round leases
        # from, not a read of each (while a tag has a limit, every queue is read).
        heads = {} if tags else self.heads
        rnd.cached = {q: h for q in servable if (h := heads.get(q)) is not None
                      and (h.complete or len(h.ids) >= rnd.asked[q])}
        return ReadQueues(tuple((q, n) for q, n in rnd.asked.items() if q not in rnd.cached),
                          limits, tags)

    def _room_in_empty(self) -> bool:
        """Some queue known empty has room (weighed a slot each: room at a greater depth
        implies room at 1, mostly): a round that read every queue would have read it,
        found it empty, and gone idle."""
        rooms, shunned = self.view.rooms, self.shunned
        return rooms.has_room(1, shunned) and any(
            room > 0 for room in rooms.rooms(dict.fromkeys(self.empty, 1), shunned).values())

    def _fits(self, known: dict[str, list[str]], room: dict[str, int]) -> bool:
        """The listed tasks may be leased without reading their queue: it held nothing
        else and every one fits, so order and limits do not matter, and the read would
        return just these ids. Never for several queues: a read orders them by priority."""
        if len(known) > 1:
            return False
        [(queue, ids)] = known.items()
        config = self.config(queue)
        return not (queue not in self.empty or config.paused or queue in self.skipped
                    or config.concurrency_limit is not None or len(ids) > room.get(queue, 0)
                    or self.tag_limits)

    def queues_read(self, read: QueuesRead, now: float, redis_now_ms: float) -> Command | None:
        """The heads were read: note what is known empty, then lease, best queue first."""
        rnd = self.round
        assert rnd is not None and not rnd.listed
        self.looked_at = now
        servable = set(rnd.order)
        self._remember(rnd, read)
        ready = {**{q: list(h.ids[:rnd.asked[q]]) for q, h in rnd.cached.items()}, **read.ready}
        heads = {**{q: h.score for q, h in rnd.cached.items()}, **read.heads}
        # What we know empty: the queues read empty now, and those not read (no room) that
        # were known empty before (only signals, which reset this, bring new tasks).
        unsure = read.cleaned | self.skipped  # not empty for all we know
        self.empty = (self.empty - servable) | {
            q for q in servable if q not in ready and q not in unsure}
        if not ready:
            self.mode = Mode.ACTIVE if read.cleaned else Mode.IDLE
            self.again = bool(read.cleaned)
            self.round = None
            self._check()
            return None
        rnd.ready, rnd.inflight, rnd.cleaned = ready, read.inflight, read.cleaned
        rnd.tags, rnd.tag_leased = read.tags, dict(read.tag_leased)
        rnd.order = scheduling.order_queues(heads, self.configs, redis_now_ms, self.aging_ms)
        return self._next()

    def _remember(self, rnd: Round, read: QueuesRead) -> None:
        """Keep the heads just read of the queues that held a few tasks (``heads``), until
        a signal names the queue, a lease is made from it, or the state goes stale."""
        for q in rnd.asked.keys() - rnd.cached.keys():
            ids = read.ready.get(q)
            if ids and len(ids) <= CACHED_IDS and q not in read.cleaned and q in read.heads:
                self.heads[q] = Head(tuple(ids), read.heads[q], len(ids) < rnd.asked[q])
            else:
                self.heads.pop(q, None)

    def assigned(self, result: Assigned) -> Command | None:
        """An ``Assign`` ran: apply what the worker holds now, go on to the next lease."""
        rnd = self.round
        assert rnd is not None and rnd.queue is not None
        self.heads.pop(rnd.queue, None)  # leased from (or tried): read it again
        if result.n < 0:  # no longer leader: the round ends here
            self.round = None
            self._check()
            return None
        if not result.failed:
            view = self.view.workers[rnd.worker]
            if result.n < rnd.size and result.held > view.leased:
                # It held more than we knew (a submit leased to it by our offer, which we
                # learn of at its next ack): what it refused may fit another worker.
                self.again = True
            self.view.assigned(rnd.worker, result.held)
            rnd.leased += result.n
        return self._next()

    def _next(self) -> Command | None:
        """The next lease of the round, planning each queue once the one before it is
        done (the plan weighs what those leases left)."""
        rnd = self.round
        assert rnd is not None
        while True:
            if rnd.plan:
                worker, batch = rnd.plan.pop(0)
                view = self.view.workers[worker]
                depth = rnd.depths[rnd.queue or ""]
                rnd.worker, rnd.size = worker, len(batch)
                tags = tuple(rnd.tagged.get(t, "") for t in batch) if rnd.tagged else ()
                return Assign(worker, rnd.queue or "", tuple(batch), view.capacity * depth,
                              view.refill_at(depth),
                              self.config(rnd.queue or "").concurrency_limit is not None, depth,
                              tags if any(tags) else ())
            if rnd.queue is not None:
                self._queue_done(rnd, rnd.queue)
            if not rnd.order:
                self._finish(rnd)
                return None
            queue = rnd.queue = rnd.order.pop(0)
            ids = rnd.ready[queue]
            if not rnd.listed:
                limit = scheduling.queue_room(self.config(queue), rnd.inflight.get(queue, 0))
                if self.tag_limits:
                    ids = self._admit(rnd, queue, ids, limit)
                else:
                    ids = ids if limit is None else ids[:limit]
            rnd.batch, rnd.leased = ids, 0
            rnd.plan = list(self.view.rooms.plan(queue, ids, self.rng, rnd.depths[queue],
                                                 self.shunned).items())
            if ids and not rnd.plan and rnd.order and not self._room_left(rnd):
                rnd.order = []  # every worker is full: the other queues wait for room

    def _room_left(self, rnd: Round) -> bool:
        """Some worker has room for a queue still to lease: a backlog over thousands of
        queues is not planned queue by queue once the workers are full."""
        depths = {rnd.depths[q] for q in rnd.order}
        return any(self.view.rooms.has_room(d, self.shunned) for d in depths)

    def _admit(self, rnd: Round, queue: str, ids: list[str], limit: int | None) -> list[str]:
        """The ids of ``queue`` to plan, given the tag limits, at most as many as its
        workers have room for (and its own limit allows); notes what it passed over."""
        depth = rnd.depths[queue]
        room = self.view.rooms.room(queue, depth, self.shunned)
        cap = room if limit is None else min(room, limit)
        if cap <= 0:
            return []
        admitted, rnd.tag_leased = scheduling.admit_tagged(ids, rnd.tags, self.tag_limits,
                                                           rnd.tag_leased, cap)
        scanned = ids.index(admitted[-1]) + 1 if admitted and len(admitted) >= cap else len(ids)
        passed = scanned - len(admitted)
        if passed > self.passed_over.get(queue, 0) and len(ids) >= rnd.asked.get(queue, 0):
            self.again = True  # the read was full: read further behind the passed-over
        self.passed_over[queue] = passed
        for task_id in admitted:
            counted = [t for t in rnd.tags.get(task_id, ()) if t in self.tag_limits]
            if counted:
                rnd.tagged[task_id] = ",".join(counted)
        return admitted

    def _queue_done(self, rnd: Round, queue: str) -> None:
        if rnd.listed:
            if rnd.leased < len(rnd.batch):
                self.empty -= {queue}  # the refused ones wait in it
        else:
            rnd.assigned += rnd.leased
            if queue in rnd.cached:
                # Remembered, not read: a small submit whose signal the backlog key held
                # back may have queued more since. Read it again at once, never assume it
                # drained.
                if rnd.leased and rnd.leased == len(rnd.ready[queue]):
                    self.again = True
            elif rnd.leased == len(rnd.ready[queue]) < min(ASSIGN_BATCH, rnd.room[queue]):
                rnd.drained.add(queue)  # the read returned all it held, we leased it all
        rnd.queue = None

    def _finish(self, rnd: Round) -> None:
        self.round = None
        if not rnd.listed:
            self.empty |= rnd.drained - rnd.cleaned
            # A full batch was taken and a worker still has room: more may be waiting
            # behind it for that room. With every eligible worker full, the next ack
            # signal wakes us.
            self.again = self.again or bool(rnd.cleaned) or (rnd.assigned > 0 and any(
                len(rnd.ready[q]) >= min(ASSIGN_BATCH, rnd.room[q])
                and self.view.rooms.room(q, rnd.depths[q], self.shunned) > 0
                for q in rnd.ready))
        self._check()

    # -- invariants --------------------------------------------------------------------

    def _check(self) -> None:
        if self.validating:
            self.validate()

    def validate(self) -> None:
        """Assert what must hold between events (run after each one in tests)."""
        assert isinstance(self.mode, Mode)
        # Known-listed ids are only ever kept for queues read empty since.
        if self.listed is not None:
            assert self.listed and set(self.listed) <= self.empty, (self.listed, self.empty)
            assert all(self.listed.values()), self.listed
            assert not self.idle, "a listed submit woke us"
        assert not self.empty & self.skipped, (self.empty, self.skipped)
        assert not self.empty & self.heads.keys(), (self.empty, self.heads)
        # Work left over means we are not idle.
        assert not (self.again and self.idle), self.mode
        if self.round is None or self.round.queue is None:
            for w in self.view.workers.values():
                assert w.leased >= 0 and w.capacity >= 0 and w.long_running >= 0, w
        self.view.rooms.check()
        if self.round is not None:
            assert self.mode is Mode.ACTIVE, self.mode
