"""Which workers have room, per queue, kept up to date as the view changes: a dispatch
round costs about what it leases, not how many workers there are.

``scheduling.plan_batch`` weighs every worker serving a queue each time it plans: with
10,000 one-slot workers, where an acknowledgement frees one slot and wakes a round for
about one task, that was milliseconds of dispatcher CPU per task (docs/scaling.md).
``RoomIndex`` keeps, per *group* (a queue's name, or "*" for the workers serving every
queue) and prefetch depth, a *shelf*: each worker's room (``free_for(depth)``), their sum,
and a heap of the workers with room by ``(load, seq, id)``. ``ClusterView``, which owns
the views, tells it of every change (``put``, ``drop``); a plan pops only the workers it
leases to and their near rivals: O(queues + leased x log workers) a round.

The choice is ``plan_batch``'s exactly: the same order (load, then ``seq``, the order in
which the view registered the workers, which is the order plan_batch is given them), the
same near set (``scheduling.pick_near``) and the same draws of the rng; the tests hold
it to that on random views and random sequences of changes.

Bookkeeping: a shelf remembers each worker's one valid heap entry (``entered``); entries
replaced since are left in the heap and dropped when they reach the top (compared by
identity), and the heap is rebuilt when they outnumber the valid ones. A shelf is built
at its first use (O(workers of the group)) and kept up to date from then on; a group
keeps the shelves of its MAX_DEPTHS most recently used depths. A view changed behind the
index's back (a test setting a field) is entered anew when its entry reaches the top;
one with no entry gains one only through ``put``. ``check`` compares the whole index with
the views (``DispatchState.validate`` runs it in tests).
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from balancer import scheduling
from balancer.scheduling import ALL_QUEUES, WorkerView

# Depths a group keeps a shelf for (a "*" group serves queues of several depths at once).
MAX_DEPTHS = 8
# Replaced entries a heap may hold beyond twice its valid ones before it is rebuilt.
STALE_SLACK = 64

Entry = tuple[float, int, str]  # (load, seq, worker id)


@dataclass
class Shape:
    """A set of queues some workers serve: all ``prefetch.queue_depth`` asks of them."""

    queues: frozenset[str]


@dataclass
class _Shelf:
    """The workers of one group at one depth: the room of each that has some, and a heap
    of their entries."""

    depth: int
    room: dict[str, int] = field(default_factory=dict)
    total: int = 0
    entered: dict[str, Entry] = field(default_factory=dict)
    heap: list[Entry] = field(default_factory=list)


def groups_of(queues: frozenset[str]) -> tuple[str, ...]:
    """The groups a worker is shelved in: "*" alone if it serves every queue (so that no
    plan meets it twice), else each queue it names."""
    return (ALL_QUEUES,) if ALL_QUEUES in queues else tuple(sorted(queues))


def groups_serving(queue: str) -> tuple[str, ...]:
    return (queue,) if queue == ALL_QUEUES else (queue, ALL_QUEUES)


class RoomIndex:
    """The workers with room per queue and depth, over the views in ``workers`` (which
    the owner, ``ClusterView``, changes only together with ``put`` or ``drop``)."""

    def __init__(self, workers: Mapping[str, WorkerView]) -> None:
        self._workers = workers
        self._seq: dict[str, int] = {}
        self._next_seq = 0
        self._queues: dict[str, frozenset[str]] = {}  # as last put
        self._members: dict[str, set[str]] = {}  # group -> worker ids
        self._shapes: dict[frozenset[str], int] = {}  # queues served -> workers serving them
        self._shelves: dict[str, dict[int, _Shelf]] = {}  # group -> depth -> shelf, LRU first
        self._planning = False  # a plan has valid entries aside: no heap is rebuilt

    @classmethod
    def of(cls, workers: Sequence[WorkerView]) -> RoomIndex:
        """An index of these views, equal loads in their order (as ``plan_batch`` has it)."""
        index = cls({w.id: w for w in workers})
        for w in workers:
            index.put(w)
        return index

    # -- changes ---------------------------------------------------------------------

    def put(self, view: WorkerView) -> None:
        """A worker registered, or its queues, capacity, leases, long runs or host load
        may have changed."""
        wid = view.id
        if wid not in self._seq:
            self._seq[wid] = self._next_seq
            self._next_seq += 1
        old = self._queues.get(wid)
        if old != view.queues:
            if old is not None:
                self._leave(wid, old)
            self._join(wid, view.queues)
        for group in groups_of(view.queues):
            for shelf in self._shelves.get(group, {}).values():
                self._enter(shelf, view)

    def drop(self, worker_id: str) -> None:
        """A worker is gone."""
        queues = self._queues.get(worker_id)
        if queues is not None:
            self._leave(worker_id, queues)
        self._seq.pop(worker_id, None)

    def _join(self, wid: str, queues: frozenset[str]) -> None:
        self._queues[wid] = queues
        self._shapes[queues] = self._shapes.get(queues, 0) + 1
        for group in groups_of(queues):
            self._members.setdefault(group, set()).add(wid)

    def _leave(self, wid: str, queues: frozenset[str]) -> None:
        del self._queues[wid]
        self._shapes[queues] -= 1
        if not self._shapes[queues]:
            del self._shapes[queues]
        for group in groups_of(queues):
            members = self._members[group]
            members.discard(wid)
            if not members:
                del self._members[group]
            for shelf in self._shelves.get(group, {}).values():
                shelf.total -= shelf.room.pop(wid, 0)
                shelf.entered.pop(wid, None)

    def _enter(self, shelf: _Shelf, view: WorkerView) -> None:
        """Bring one worker's room and entry on ``shelf`` up to date."""
        wid = view.id
        room = max(0, view.free_for(shelf.depth))
        shelf.total += room - shelf.room.get(wid, 0)
        if room <= 0:
            shelf.room.pop(wid, None)
            shelf.entered.pop(wid, None)
            return
        shelf.room[wid] = room
        entry = (scheduling.load(view), self._seq[wid], wid)
        if shelf.entered.get(wid) != entry:
            shelf.entered[wid] = entry
            heapq.heappush(shelf.heap, entry)
            if not self._planning and len(shelf.heap) > 2 * len(shelf.entered) + STALE_SLACK:
                shelf.heap = list(shelf.entered.values())
                heapq.heapify(shelf.heap)

    def _shelf(self, group: str, depth: int) -> _Shelf:
        """The group's shelf at this depth, built at its first use."""
        shelves = self._shelves.setdefault(group, {})
        shelf = shelves.pop(depth, None)
        if shelf is None:
            shelf = _Shelf(depth)
            for wid in self._members.get(group, ()):
                view = self._workers[wid]
                room = view.free_for(depth)
                if room > 0:
                    shelf.room[wid] = room
                    shelf.entered[wid] = (scheduling.load(view), self._seq[wid], wid)
            shelf.total = sum(shelf.room.values())
            shelf.heap = list(shelf.entered.values())
            heapq.heapify(shelf.heap)
            if len(shelves) >= MAX_DEPTHS:
                del shelves[next(iter(shelves))]
        shelves[depth] = shelf  # most recently used last
        return shelf

    # -- questions -------------------------------------------------------------------

    def served(self, queue: str) -> bool:
        """Some worker serves ``queue``."""
        return any(group in self._members for group in groups_serving(queue))

    def room(self, queue: str, depth: int = 1, exclude: Collection[str] = ()) -> int:
        """The leases the workers serving ``queue`` may still take at ``depth`` (the sum of
        their ``free_for``), the workers in ``exclude`` left out."""
        return sum(self._free(group, depth, exclude) for group in groups_serving(queue))

    def rooms(self, depths: Mapping[str, int], exclude: Collection[str] = ()
              ) -> dict[str, int]:
        """``room`` of each queue of ``depths`` at its depth: the room of the queues no
        worker names (served by "*" workers alone) weighed once per depth, not once per
        queue (a queue per tenant: thousands of them at every round)."""
        unnamed: dict[int, int] = {}
        out = {}
        for queue, depth in depths.items():
            if queue in self._members:
                out[queue] = self.room(queue, depth, exclude)
                continue
            room = unnamed.get(depth)
            if room is None:
                room = unnamed[depth] = self.room(queue, depth, exclude)
            out[queue] = room
        return out

    def has_room(self, depth: int = 1, exclude: Collection[str] = ()) -> bool:
        """Some worker, but those in ``exclude``, may take a lease at ``depth``."""
        return any(self._free(group, depth, exclude) > 0 for group in list(self._members))

    def _free(self, group: str, depth: int, exclude: Collection[str]) -> int:
        """The leases the group's workers, but those in ``exclude``, may take at ``depth``."""
        shelf = self._shelf(group, depth)
        return shelf.total - sum(shelf.room.get(w, 0) for w in exclude)

    def shapes(self, exclude: Collection[str] = ()) -> list[Shape]:
        """The distinct sets of queues the workers serve (those in ``exclude`` left out):
        what ``prefetch.queue_depth`` weighs, in O(sets) instead of O(workers)."""
        counts = dict(self._shapes)
        for wid in exclude:
            queues = self._queues.get(wid)
            if queues is not None:
                counts[queues] -= 1
        return [Shape(queues) for queues, n in counts.items() if n > 0]

    def plan(self, queue: str, task_ids: Sequence[str], rng: random.Random, depth: int = 1,
             exclude: Collection[str] = ()) -> dict[str, list[str]]:
        """``plan_batch(queue, task_ids, <the views but exclude>, rng, depth)``, without
        weighing the workers it does not lease to. The views stay as they are: the caller
        ``put``s what the lease script accepted."""
        shelves = [s for s in (self._shelf(g, depth) for g in groups_serving(queue)) if s.heap]
        planned: list[Entry] = []  # workers picked, with this plan's leases counted
        left: dict[str, int] = {}  # the room they have left
        aside: list[tuple[_Shelf, Entry]] = []  # valid entries taken off, put back at the end
        weighed: set[str] = set()  # workers whose entries were checked against their views

        def top(shelf: _Shelf) -> Entry | None:
            while shelf.heap:
                entry = shelf.heap[0]
                wid = entry[2]
                if shelf.entered.get(wid) is not entry:
                    heapq.heappop(shelf.heap)  # replaced since
                elif wid in exclude:
                    aside.append((shelf, heapq.heappop(shelf.heap)))
                elif wid not in weighed and self._drifted(shelf, entry):
                    self.put(self._workers[wid])
                else:
                    weighed.add(wid)
                    return entry
            return None

        def pop_within(limit: float) -> tuple[Entry, _Shelf | None] | None:
            best: tuple[Entry, _Shelf | None] | None = None
            for shelf in shelves:
                entry = top(shelf)
                if entry is not None and (best is None or entry < best[0]):
                    best = (entry, shelf)
            if planned and (best is None or planned[0] < best[0]):
                best = (planned[0], None)
            if best is None or best[0][0] > limit:
                return None
            heapq.heappop(best[1].heap if best[1] is not None else planned)
            return best

        plan: dict[str, list[str]] = {}
        self._planning = True
        try:
            for task_id in task_ids:
                first = pop_within(math.inf)
                if first is None:
                    break
                (entry, shelf), others = scheduling.pick_near(first[0][0], first, pop_within,
                                                              rng)
                for other, source in others:
                    heapq.heappush(source.heap if source is not None else planned, other)
                wid = entry[2]
                if shelf is not None:
                    aside.append((shelf, entry))
                    left[wid] = shelf.room[wid]
                left[wid] -= 1
                tasks = plan.setdefault(wid, [])
                tasks.append(task_id)
                if left[wid] > 0:
                    view = self._workers[wid]
                    heapq.heappush(planned, (scheduling.load(view, len(tasks)), entry[1], wid))
        finally:
            self._planning = False
            for shelf, entry in aside:
                if shelf.entered.get(entry[2]) is entry:
                    heapq.heappush(shelf.heap, entry)
        return plan

    def _drifted(self, shelf: _Shelf, entry: Entry) -> bool:
        """The worker's view no longer matches its entry (it was changed without ``put``)."""
        view = self._workers[entry[2]]
        return (view.queues != self._queues[view.id] or scheduling.load(view) != entry[0]
                or view.free_for(shelf.depth) != shelf.room[view.id])

    def check(self) -> None:
        """Assert that the index says what the views say (for tests: O(workers))."""
        workers = self._workers
        assert self._queues == {w: v.queues for w, v in workers.items()}, "queues"
        seqs = [self._seq[w] for w in workers]
        assert seqs == sorted(seqs), "equal loads out of the views' order"
        members: dict[str, set[str]] = {}
        for wid, view in workers.items():
            for group in groups_of(view.queues):
                members.setdefault(group, set()).add(wid)
        assert self._members == members, (self._members, members)
        for group, shelves in self._shelves.items():
            for depth, shelf in shelves.items():
                room = {w: workers[w].free_for(depth) for w in members.get(group, ())}
                room = {w: r for w, r in room.items() if r > 0}
                assert shelf.room == room and shelf.total == sum(room.values()), (group, depth)
                assert shelf.entered == {w: (scheduling.load(workers[w]), self._seq[w], w)
                                         for w in room}, (group, depth)
                listed = {id(e) for e in shelf.heap}
                assert all(id(e) in listed for e in shelf.entered.values()), (group, depth)
