"""The dispatcher's choices, as pure functions over in-memory views: no Redis, no clock.

One load objective decides everything (``load``); ``choose_worker`` picks among the
least loaded at random so that a burst between two heartbeats does not herd onto one
worker; ``order_queues`` serves higher priorities first, with aging so nothing starves.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from balancer.common import prefetch
from balancer.common.models import QueueConfig

ALL_QUEUES = prefetch.ALL_QUEUES
# How much a fully busy host counts against a worker, in units of "all slots taken".
CPU_WEIGHT = 0.5
MEMORY_WEIGHT = 4.0
MEMORY_SAFE = 0.85
# Workers whose load is within this of the best are equally good: pick one at random.
SPREAD = 0.05
NEAR_MAX = 8
# Prefetch (how many tasks per slot, when to refill): the rules live in common/prefetch.py,
# shared with the workers and ack.lua.
PREFETCH_TARGET_MS = prefetch.PREFETCH_TARGET_MS
PREFETCH_MAX = prefetch.PREFETCH_MAX
prefetch_depth = prefetch.prefetch_depth
queue_depth = prefetch.queue_depth
queue_depths = prefetch.queue_depths
# A standing offer names this many workers at most, hosts compared in steps of this much.
OFFER_WORKERS = 4
OFFER_STEP = 0.25

T = TypeVar("T")


@dataclass
class WorkerView:
    """What the dispatcher believes about one worker."""

    id: str
    queues: frozenset[str]
    capacity: int
    leased: int = 0
    cpu: float = 0.0  # pressure on its cores from other processes, 0..1
    memory: float = 0.0
    last_seen: float = 0.0
    info: dict[str, object] = field(default_factory=dict)
    long_running: int = 0  # slots busy with a long task: nothing is prefetched behind them
    beat_s: float = 0.0  # how often it says it beats (0: not said)

    def serves(self, queue: str) -> bool:
        return queue in self.queues or ALL_QUEUES in self.queues

    @property
    def free(self) -> int:
        return self.free_for(1)

    def free_for(self, depth: int) -> int:
        """Leases it may still take when each slot may hold ``depth`` tasks
        (``prefetch.free_for``: refilled only once run down to half its prefetch)."""
        if depth == 1:  # the common case, inline: this runs per worker per queue per round
            return max(0, self.capacity - self.leased)
        return prefetch.free_for(self.capacity, self.leased, self.long_running, depth)

    def refill_at(self, depth: int) -> int:
        """The fewest free places worth a lease (``prefetch.refill_at``), for the lease
        script to check against what the worker truly holds."""
        return prefetch.refill_at(self.capacity, self.leased, self.long_running, depth)


def load(worker: WorkerView, more: int = 0) -> float:
    """Share of slots leased (with ``more`` leases planned on top), plus a penalty for cores
    that other processes keep busy and for a host short of memory."""
    leased = worker.leased + more
    slots = leased / worker.capacity if worker.capacity > 0 else float("inf")
    return slots + host_load(worker)


def host_load(worker: WorkerView) -> float:
    """The part of a worker's load its host adds, whatever its slots hold."""
    return CPU_WEIGHT * worker.cpu + max(0.0, worker.memory - MEMORY_SAFE) * MEMORY_WEIGHT


def choose_worker(
    queue: str, workers: Sequence[WorkerView], rng: random.Random, depth: int = 1
) -> WorkerView | None:
    """The least-loaded worker that serves ``queue`` and has room, or None: the choice
    ``plan_batch`` makes for a single task."""
    plan = plan_batch(queue, ["?"], workers, rng, depth)
    chosen = next(iter(plan), None)
    return next((w for w in workers if w.id == chosen), None)


def plan_batch(
    queue: str, task_ids: Sequence[str], workers: Sequence[WorkerView], rng: random.Random,
    depth: int = 1,
) -> dict[str, list[str]]:
    """Give each task, in order, to the least-loaded worker with room, counting earlier
    picks; among the (at most NEAR_MAX) workers within SPREAD of the best, at random
    (``pick_near``); equal loads in the order of ``workers``.

    A heap keeps this O(log workers) per task, but building it weighs every worker: the
    dispatcher plans with ``rooms.RoomIndex``, which keeps the heap between rounds and
    makes this same choice. The caller applies what the lease script accepted.
    """
    room = {w.id: w.free_for(depth) for w in workers if w.serves(queue)}
    views = {w.id: replace(w) for w in workers if room.get(w.id, 0) > 0}
    heap = [(load(v), i, v.id) for i, v in enumerate(views.values())]
    heapq.heapify(heap)

    def pop_within(limit: float) -> tuple[float, int, str] | None:
        return heapq.heappop(heap) if heap and heap[0][0] <= limit else None

    plan: dict[str, list[str]] = {}
    for task_id in task_ids:
        if not heap:
            break
        first = heapq.heappop(heap)
        pick, others = pick_near(first[0], first, pop_within, rng)
        for entry in others:
            heapq.heappush(heap, entry)
        view = views[pick[2]]
        view.leased += 1
        room[view.id] -= 1
        plan.setdefault(view.id, []).append(task_id)
        if room[view.id] > 0:
            heapq.heappush(heap, (load(view), pick[1], view.id))
    return plan


def pick_near(best: float, first: T, pop_within: Callable[[float], T | None],
              rng: random.Random) -> tuple[T, list[T]]:
    """One at random of ``first`` (the least loaded candidate, of load ``best``) and the
    next ones ``pop_within(best + SPREAD)`` yields in order, NEAR_MAX in all at most, so
    that a burst between two heartbeats does not herd onto one worker. Returns it and the
    others, which go back among the candidates. (The rng is drawn only when there is a
    choice: plans are reproducible for a seed.)"""
    near = [first]
    while len(near) < NEAR_MAX:
        entry = pop_within(best + SPREAD)
        if entry is None:
            break
        near.append(entry)
    pick = near.pop(rng.randrange(len(near))) if len(near) > 1 else near.pop()
    return pick, near


def offer_workers(queue: str, workers: Sequence[WorkerView],
                  offered: Mapping[str, float] | None = None) -> list[WorkerView]:
    """The workers a standing offer for ``queue`` names, best hosts first: a small submit
    leases to the least loaded of them with free slots (submit_small.lua evaluates ``load`` with
    the ``host_load`` the offer carries). At most OFFER_WORKERS, of those that serve
    the queue by name (a "*" worker's queues are open-ended: what else could be waiting
    for it is unknown), by how loaded their hosts are.

    Clients learn the offer from their previous submit, so it must not flicker: hosts are
    compared in coarse steps (``offered_host_load``), and the slots a worker has taken do
    not count (the script sees those, at the moment of the lease). ``offered`` holds the
    host loads the standing offer carries, per worker id (see ``offered_host_load``)."""
    offered = offered or {}
    serving = (w for w in workers if queue in w.queues and w.capacity > 0)
    return heapq.nsmallest(OFFER_WORKERS, serving,
                           key=lambda w: (offered_host_load(w, offered.get(w.id)), w.id))


def offered_host_load(worker: WorkerView, previous: float | None = None) -> float:
    """``host_load`` in steps of OFFER_STEP, as an offer carries it: coarse enough that the
    noise of a host's load does not rewrite the offer (each rewrite costs every client one
    submit through the dispatcher), fine enough to tell a busy host from a free one.

    A load hovering at a step's edge would still flip between two steps at every
    heartbeat; so the step ``previous``ly offered stands until the load leaves it by half
    a step more."""
    raw = host_load(worker)
    if previous is not None and previous - OFFER_STEP / 2 <= raw < previous + 1.5 * OFFER_STEP:
        return previous
    return int(raw / OFFER_STEP) * OFFER_STEP


def offer_basis(worker: WorkerView) -> tuple[frozenset[str], int, int, int]:
    """What the standing offers weigh of a worker: its queues, its slots, its host's
    load in half steps (``offered_host_load`` turns only at half steps, whatever was
    offered before), and its slots running long tasks (its places,
    ``prefetch.offered_places``). While it stays, no offer needs a new look at the
    worker."""
    return (worker.queues, worker.capacity, int(host_load(worker) / (OFFER_STEP / 2)),
            worker.long_running)


def queue_rank(config: QueueConfig, head_score: float, now_ms: float, aging_ms: float) -> float:
    """A queue's effective priority: its own, plus one level per ``aging_ms`` its head waited."""
    waited = max(0.0, now_ms - head_score)
    return config.priority + (waited / aging_ms if aging_ms > 0 else 0.0)


def order_queues(
    heads: Mapping[str, float],
    configs: Mapping[str, QueueConfig],
    now_ms: float,
    aging_ms: float,
) -> list[str]:
    """Non-empty, unpaused queues, the one to serve first first."""
    keyed = []
    for q, head in heads.items():
        config = config_of(configs, q)
        if not config.paused:
            keyed.append((-queue_rank(config, head, now_ms, aging_ms), head, q))
    return [q for *_, q in sorted(keyed)]


def config_of(configs: Mapping[str, QueueConfig], queue: str) -> QueueConfig:
    """A queue's config, its defaults when it has none (made only then: a round asks for
    thousands)."""
    config = configs.get(queue)
    return QueueConfig(queue) if config is None else config


def queue_room(config: QueueConfig, inflight: int) -> int | None:
    """How many more tasks the queue's concurrency limit allows; None when unlimited."""
    if config.concurrency_limit is None:
        return None
    return max(0, config.concurrency_limit - inflight)


def admit_tagged(
    ids: Sequence[str], tags: Mapping[str, Sequence[str]], limits: Mapping[str, int],
    leased: Mapping[str, int], cap: int | None = None,
) -> tuple[list[str], dict[str, int]]:
    """Which of ``ids`` (in queue order) may be leased given the tag limits: a task goes
    when every tag of it with a limit has room (``limits[tag]`` less the tag's leases,
    ``leased`` counts plus those admitted before it); the others are passed over, and
    never hold up the tasks behind them. At most ``cap`` (the queue's own room, None:
    unlimited). ``tags``: the tags of each id (ids not in it have none).

    Returns the admitted ids and the counts they bring each tag to, for the next queue of
    the round. A tag's limit lowered below its count admits nothing until leases end."""
    counts = dict(leased)
    admitted: list[str] = []
    for task_id in ids:
        if cap is not None and len(admitted) >= cap:
            break
        limited = [t for t in tags.get(task_id, ()) if t in limits]
        if any(counts.get(t, 0) >= limits[t] for t in limited):
            continue
        for t in limited:
            counts[t] = counts.get(t, 0) + 1
        admitted.append(task_id)
    return admitted, counts


# With aging off, one priority level outweighs any wait (ms in ~30 years).
STRICT_LEVEL_MS = 1e12


def task_score(arrival_ms: int, priority: int, aging_ms: float) -> float:
    """A task's place in its queue: earlier is served first; a priority level counts as
    ``aging_ms`` of waiting, so a low-priority task is overtaken by at most that much.
    With ``aging_ms`` 0, priority is strict."""
    return arrival_ms - priority * (aging_ms if aging_ms > 0 else STRICT_LEVEL_MS)
