"""Prefetch, refill and quiet acks: the rules dispatcher, workers and ack.lua agree on.

A queue whose tasks take much less than a dispatch round trip may have several tasks leased
per slot, so that workers never wait for the dispatcher and one script call carries many
tasks. Everything about how many, and when the dispatcher hears of it, is here.

When the dispatcher must be woken
---------------------------------

The dispatcher sleeps on the wake list; a signal wakes it. A worker's ack wakes it only
when the dispatcher could do something with it:

1. **Dependents were queued** (the ack unlocked them): always, they are new work.
2. Otherwise never **while the dispatcher is idle** (it found every queue the worker serves
   empty and set the ``idle`` key): a freed slot has nothing to be refilled with. When work
   comes, the dispatcher deletes the key and recounts what each worker holds.
3. Otherwise never **above the quiet point** (``ack_quiet_above``, for the depth the
   acked tasks were leased with, the largest in a batch): a worker holding more is not
   due a refill (``free_for``). With prefetch it is half the worker's places, ``capacity *
   depth // 2``. Without (a batch with a task leased one per slot), there is none: every
   slot freed is due a refill at once, and every ack signals. (With the largest
   prefetch's quiet point for every ack, a 4-slot worker working off a backlog of long
   tasks left a freed slot idle until a second ack; with ``capacity - 1``, an 8-slot
   worker's second slot freed before the refill waited for the next checkpoint.)
4. Below it, only **at checkpoints** on the way down (``checkpoints``: the quiet point,
   then half of it, a quarter, ..., 1, and always 0): the first asks for the refill, the
   next ones insist in case the dispatcher could not yet serve it. ack.lua applies this
   (``passes_checkpoint``) against what the worker truly holds.

A lease carries its prefetch depth (the last field of the inbox entry), so a worker takes
its batches by what the dispatcher decided (``queue_depth``, with its priority rule)
instead of deciding again from its own view of run times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from balancer.common.models import QueueConfig

# A queue whose tasks take much less than PREFETCH_TARGET_MS may have up to PREFETCH_MAX
# tasks leased per slot (never more than PREFETCH_TARGET_MS of their run time).
PREFETCH_TARGET_MS = 20.0
PREFETCH_MAX = 32
# A run past the prefetch horizon is long next to what prefetching assumed: the worker
# shows it as running and hands back what was prefetched behind it.
LONG_RUN_S = PREFETCH_TARGET_MS / 1000
ALL_QUEUES = "*"


class Serving(Protocol):
    """What ``queue_depth`` needs of a worker: the queues it serves ("*": all)."""

    queues: frozenset[str]


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


# Per worker (or set of queues served), the highest priority of a queue it serves, None
# when none of its queues has a config.
Highest = tuple[tuple[frozenset[str], int | None], ...]


def queue_depth(queue: str, mean_task_ms: float | None, configs: Mapping[str, QueueConfig],
                workers: Iterable[Serving]) -> int:
    """Tasks per slot to lease for ``queue``: ``prefetch_depth`` of its run time, but 1
    (no prefetch) when a worker serving it also serves a queue of higher priority. A task
    prefetched behind a running one starts when that one ends; a task of the higher queue
    arriving meanwhile would wait behind it: a priority inversion."""
    return queue_depths({queue: mean_task_ms}, configs, workers)[queue]


def queue_depths(means: Mapping[str, float | None], configs: Mapping[str, QueueConfig],
                 workers: Iterable[Serving], highest: Highest | None = None) -> dict[str, int]:
    """``queue_depth`` of every queue of ``means`` (its mean task run time), weighing
    each worker's highest priority once (``highest``, as ``highest_priorities`` gives it:
    worked out here when not given): collecting each queue's higher queues for every
    queue cost O(queues²) a dispatch round (3,000 queues, one per tenant: a third of the
    dispatcher's time, at 20 tasks a second)."""
    if highest is None:
        top = max((c.priority for c in configs.values()), default=None)
        highest = highest_priorities(configs, workers, top)
    out: dict[str, int] = {}
    for queue, mean in means.items():
        depth = prefetch_depth(mean)
        if depth > 1:
            own = configs[queue].priority if queue in configs else 0
            if any(h is not None and h > own and (queue in served or ALL_QUEUES in served)
                   for served, h in highest):
                depth = 1
        out[queue] = depth
    return out


def highest_priorities(configs: Mapping[str, QueueConfig], workers: Iterable[Serving],
                       top: int | None) -> Highest:
    """What ``queue_depths`` weighs of the workers: each one's highest configured priority,
    ``top`` (the highest of every config) for one serving "*"."""
    return tuple(
        (w.queues, top if ALL_QUEUES in w.queues
         else max((configs[q].priority for q in w.queues if q in configs), default=None))
        for w in workers)


def news(depth_now: int, depth_told: int | None) -> bool:
    """Whether a worker tells the dispatcher of a queue's run time at once: its first, or
    one that halves or doubles the prefetch allowed (from none to some, or back). The
    dispatcher prefetches nothing for a queue until it knows its tasks are short."""
    return depth_told is None or depth_now >= 2 * depth_told or 2 * depth_now <= depth_told


def free_for(capacity: int, leased: int, long_running: int, depth: int) -> int:
    """Leases a worker may still take when each slot may hold ``depth`` tasks.

    With prefetch (depth > 1) a worker is refilled only once it has run down to half its
    prefetch: one batch then carries many tasks instead of one per ack. A slot running a
    long task counts as one lease and gets no prefetch: what waited behind it would wait
    for the long task while another worker may be free.
    """
    if depth == 1:
        return max(0, capacity - leased)
    long = min(long_running, capacity, leased)
    limit, held = (capacity - long) * depth, leased - long
    if held > limit // 2:
        return 0
    return max(0, limit - held)


def refill_at(capacity: int, leased: int, long_running: int, depth: int) -> int:
    """The fewest free places, of ``capacity * depth``, worth a lease: the refill point of
    ``free_for``, for the lease script to check against what the worker truly holds (the
    dispatcher's count lags: quiet acks, and acks read after a lease)."""
    if depth == 1:
        return 1
    long = min(long_running, capacity, leased)
    return max(1, capacity * depth - long - (capacity - long) * depth // 2)


def offered_places(capacity: int, long_running: int, depth: int) -> int:
    """Leases in all a worker may hold after a submit that took a standing offer leased
    it one task: ``free_for``'s limit, a slot each, and ``depth`` per slot that runs no
    long task (nothing is prefetched behind those)."""
    long = min(long_running, capacity)
    return long + (capacity - long) * depth


def offer_depth(depth: int) -> int:
    """The prefetch depth a standing offer carries: ``depth`` rounded down to a power of
    two, so that the noise of a queue's mean run time does not rewrite the offer (each
    rewrite costs every client one submit through the dispatcher)."""
    return 1 << (max(1, depth).bit_length() - 1)


def ack_quiet_above(capacity: int, depth: int = PREFETCH_MAX) -> int:
    """Leases a worker of ``capacity`` slots may hold and still ack, for tasks leased
    ``depth`` per slot, without a signal: it is not due a refill above this (``free_for``).
    With prefetch, half its places; without, -1: every slot freed is due a refill at once,
    and every ack signals."""
    if depth <= 1:
        return -1
    return capacity * depth // 2


def checkpoints(quiet: int) -> list[int]:
    """The counts of leases held, run down below ``quiet``, at which an ack signals."""
    points, c = [], quiet
    while c >= 1:
        points.append(c)
        c //= 2
    return [*points, 0]


def passes_checkpoint(before: int, after: int, quiet: int) -> bool:
    """Whether an ack that took a worker from ``before`` leases to ``after`` signals
    (``quiet`` < 0: always). Mirrors ``passes_checkpoint`` in ack.lua."""
    if quiet < 0 or after == 0:
        return True
    return any(after <= c < before for c in checkpoints(quiet))
