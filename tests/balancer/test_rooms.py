"""balancer.rooms: the index of workers with room makes plan_batch's choice, kept up to
date through the view's changes, weighing only the workers it leases to."""

from __future__ import annotations

import heapq
import random
from dataclasses import replace
from typing import Any

import pytest
from balancer.common.models import WorkerInfo
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from balancer import rooms, scheduling
from balancer.rooms import RoomIndex
from balancer.scheduling import NEAR_MAX, SPREAD, WorkerView, load, plan_batch
from balancer.view import ClusterView

QUEUES = ("a", "b", "*")


def reference_plan(queue: str, task_ids: list[str], workers: list[WorkerView],
                   rng: random.Random, depth: int = 1) -> dict[str, list[str]]:
    """plan_batch as it was before the index (main at 32c96b0), kept as the oracle."""
    room = {w.id: w.free_for(depth) for w in workers if w.serves(queue)}
    views = {w.id: replace(w) for w in workers if room.get(w.id, 0) > 0}
    heap = [(load(v), i, v.id) for i, v in enumerate(views.values())]
    heapq.heapify(heap)
    plan: dict[str, list[str]] = {}
    for task_id in task_ids:
        if not heap:
            break
        best = heap[0][0]
        near = [heapq.heappop(heap)]
        while heap and len(near) < NEAR_MAX and heap[0][0] <= best + SPREAD:
            near.append(heapq.heappop(heap))
        pick = near.pop(rng.randrange(len(near))) if len(near) > 1 else near.pop()
        for entry in near:
            heapq.heappush(heap, entry)
        view = views[pick[2]]
        view.leased += 1
        room[view.id] -= 1
        plan.setdefault(view.id, []).append(task_id)
        if room[view.id] > 0:
            heapq.heappush(heap, (load(view), pick[1], view.id))
    return plan


def assert_sound(plan: dict[str, list[str]], queue: str, workers: list[WorkerView],
                 depth: int, n: int) -> None:
    """Never a worker that does not serve the queue or has no room, never over its room,
    every task placed while room is left."""
    by_id = {w.id: w for w in workers}
    for wid, tasks in plan.items():
        assert by_id[wid].serves(queue) and 0 < len(tasks) <= by_id[wid].free_for(depth)
    room = sum(w.free_for(depth) for w in workers if w.serves(queue))
    assert sum(map(len, plan.values())) == min(n, room)


views = st.lists(st.builds(
    lambda queues, capacity, leased, long_running, cpu, memory: (
        frozenset(queues), capacity, leased, long_running, cpu, memory),
    st.sets(st.sampled_from(QUEUES), max_size=2), st.integers(0, 3), st.integers(0, 8),
    st.integers(0, 2), st.sampled_from([0.0, 0.02, 0.05, 0.1, 0.5]),
    st.sampled_from([0.0, 0.9])), max_size=24)


@hsettings(max_examples=300, deadline=None)
@given(views, st.sampled_from(["a", "b"]), st.sampled_from([1, 1, 2, 4]),
       st.integers(0, 30), st.integers(0, 2**32))
def test_the_indexed_plan_is_the_plan_batch_of_the_same_views(
        shapes: list[tuple[Any, ...]], queue: str, depth: int, n: int, seed: int) -> None:
    workers = [WorkerView(f"w{i}", *shape) for i, shape in enumerate(shapes)]
    tasks = [f"t{i}" for i in range(n)]
    expected = reference_plan(queue, tasks, workers, random.Random(seed), depth)
    index = RoomIndex.of(workers)
    assert index.plan(queue, tasks, random.Random(seed), depth) == expected
    assert plan_batch(queue, tasks, workers, random.Random(seed), depth) == expected
    assert_sound(expected, queue, workers, depth, n)
    assert index.room(queue, depth) == sum(w.free_for(depth) for w in workers if w.serves(queue))
    index.check()  # planning changed neither the views nor the index


def blob(wid: str, queues: tuple[str, ...], capacity: int, long_running: int = 0,
         pressure: float = 0.0, memory: float = 0.0) -> bytes:
    return WorkerInfo(wid, queues, capacity, long_running=long_running, pressure=pressure,
                      memory=memory).to_blob()


@hsettings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32))
def test_the_index_stays_the_views_through_every_kind_of_change(seed: int) -> None:
    """Registrations, heartbeats (queues, capacity, long runs, host load), acks, offers
    taken, lease results, departures and re-registrations, in random order: after each,
    the index agrees with the views and plans what plan_batch plans over them (some
    workers excluded, as shunned ones are)."""
    rng = random.Random(seed)
    view = ClusterView()
    names = [f"w{i}" for i in range(12)]
    for step in range(80):
        wid = rng.choice(names)
        known = wid in view.workers
        kind = rng.choice(["beat", "beat", "ack", "offer", "assigned", "forget", "add"])
        if kind == "beat" or not known:
            queues = tuple(rng.sample(QUEUES, rng.randint(0, 2)))
            view.heartbeat(wid, rng.randint(0, 6), blob(
                wid, queues, rng.randint(0, 3), rng.randint(0, 2),
                rng.choice([0.0, 0.04, 0.3]), rng.choice([0.0, 0.95])), now=float(step))
        elif kind == "ack":
            view.acked(wid, rng.randint(0, 6))
        elif kind == "offer":
            view.offer_taken(wid, rng.randint(0, 6))
        elif kind == "assigned":
            view.assigned(wid, rng.randint(0, 6))
        elif kind == "forget":
            view.forget(wid)
        else:
            view.forget(wid)
            view.add(WorkerView(wid, frozenset(), 0, rng.randint(0, 3)))
        view.rooms.check()
        workers = list(view.workers.values())
        shunned = set(rng.sample(sorted(view.workers), min(2, len(workers)) * rng.randint(0, 1)))
        eligible = [w for w in workers if w.id not in shunned]
        queue, depth = rng.choice(["a", "b"]), rng.choice([1, 1, 2, 8])
        tasks = [f"t{i}" for i in range(rng.randint(0, 12))]
        planned = view.rooms.plan(queue, tasks, random.Random(step), depth, shunned)
        assert planned == reference_plan(queue, tasks, eligible, random.Random(step), depth)
        assert view.rooms.room(queue, depth, shunned) == sum(
            w.free_for(depth) for w in eligible if w.serves(queue))
        view.rooms.check()


def test_a_plan_over_ten_thousand_workers_weighs_only_the_few_it_leases_to(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With one-slot workers an ack frees one slot and a round leases about one task: the
    round must not weigh every worker, as plan_batch does."""
    view = ClusterView()
    for i in range(10_000):
        view.heartbeat(f"w{i}", 1, blob(f"w{i}", ("q",), 1), now=0.0)
    assert view.rooms.room("q") == 0  # the shelf is built here, once
    weighed = 0
    real_load = scheduling.load

    def counting(worker: WorkerView, more: int = 0) -> float:
        nonlocal weighed
        weighed += 1
        return real_load(worker, more)

    monkeypatch.setattr(scheduling, "load", counting)
    rng = random.Random(3)
    for i in range(0, 10_000, 997):
        view.acked(f"w{i}", 0)  # one slot freed
        assert view.rooms.room("q") == 1
        assert view.rooms.plan("q", ["t"], rng) == {f"w{i}": ["t"]}
        view.assigned(f"w{i}", 1)
    assert weighed < 200
    view.rooms.check()


def test_equal_workers_share_a_batch_as_plan_batch_spreads_it() -> None:
    view = ClusterView()
    for wid in ("a", "b", "c"):
        view.heartbeat(wid, 0, blob(wid, ("q",), 4), now=0.0)
    plan = view.rooms.plan("q", [str(i) for i in range(6)], random.Random(1))
    assert sorted(len(v) for v in plan.values()) == [2, 2, 2]
    assert all(w.leased == 0 for w in view.workers.values())  # a plan changes no view


def test_a_star_worker_serves_every_queue_and_is_met_once() -> None:
    view = ClusterView()
    view.heartbeat("star", 0, blob("star", ("*", "q"), 2), now=0.0)
    view.heartbeat("named", 0, blob("named", ("q",), 1), now=0.0)
    assert view.rooms.served("anything") and view.rooms.room("other") == 2
    assert view.rooms.room("q") == 3
    plan = view.rooms.plan("q", [str(i) for i in range(5)], random.Random(0))
    assert sum(map(len, plan.values())) == 3 and len(plan["star"]) == 2


def test_excluded_workers_get_nothing_and_their_room_is_not_counted() -> None:
    view = ClusterView()
    for wid in ("a", "b"):
        view.heartbeat(wid, 0, blob(wid, ("q",), 2), now=0.0)
    assert view.rooms.room("q", exclude={"a"}) == 2
    assert view.rooms.plan("q", ["1", "2", "3"], random.Random(0), exclude={"a"}) == {
        "b": ["1", "2"]}
    assert view.rooms.plan("q", ["1"], random.Random(0), exclude={"b"}) == {"a": ["1"]}


def test_a_worker_changed_behind_the_index_is_weighed_as_it_is_now() -> None:
    """A test may set a view's field directly: the worker's entry is weighed anew when it
    comes up, so a busier host is not chosen for the load it had."""
    view = ClusterView()
    for wid in ("a", "b"):
        view.heartbeat(wid, 0, blob(wid, ("q",), 1), now=0.0)
    assert view.rooms.room("q") == 2
    view.workers["a"].cpu = 1.0
    for seed in range(20):
        assert view.rooms.plan("q", ["t"], random.Random(seed)) == {"b": ["t"]}
    view.rooms.check()


def test_queues_left_and_departed_workers_leave_the_index() -> None:
    view = ClusterView()
    view.heartbeat("a", 0, blob("a", ("q", "r"), 2), now=0.0)
    assert view.rooms.room("q") == 2 and view.rooms.served("r")
    view.heartbeat("a", 0, blob("a", ("r",), 2), now=1.0)
    assert view.rooms.room("q") == 0 and not view.rooms.served("q")
    view.forget("a")
    assert not view.rooms.served("r") and view.rooms.plan("r", ["t"], random.Random(0)) == {}
    view.rooms.check()


def test_replaced_entries_do_not_pile_up_in_a_heap() -> None:
    """Each change of a worker's load adds an entry; the old ones are dropped in bulk."""
    view = ClusterView()
    view.heartbeat("a", 0, blob("a", ("q",), 1000), now=0.0)
    view.rooms.room("q")
    for n in range(5000):
        view.acked("a", n % 999)
    shelf = view.rooms._shelf("q", 1)
    assert len(shelf.heap) <= 2 * len(shelf.entered) + rooms.STALE_SLACK + 1
    view.rooms.check()


def test_a_group_keeps_shelves_for_its_most_recent_depths_only() -> None:
    view = ClusterView()
    view.heartbeat("a", 0, blob("a", ("q",), 1), now=0.0)
    for depth in range(1, 3 * rooms.MAX_DEPTHS):
        assert view.rooms.room("q", depth) == depth
    assert len(view.rooms._shelves["q"]) == rooms.MAX_DEPTHS
    view.acked("a", 1)
    view.rooms.check()


def test_the_shapes_are_the_distinct_queue_sets_served_for_queue_depth() -> None:
    view = ClusterView()
    for wid, queues in (("a", ("q",)), ("b", ("q",)), ("c", ("q", "high"))):
        view.heartbeat(wid, 0, blob(wid, queues, 1), now=0.0)
    assert sorted(sorted(s.queues) for s in view.rooms.shapes()) == [["high", "q"], ["q"]]
    assert [sorted(s.queues) for s in view.rooms.shapes(exclude={"c"})] == [["q"]]


@hsettings(max_examples=200, deadline=None)
@given(views, st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.sampled_from([1, 2, 4])),
       st.sets(st.sampled_from(["w0", "w1", "w2"])))
def test_the_room_of_many_queues_at_once_is_each_ones_room_and_has_room_says_if_any(
        shapes: list[tuple[Any, ...]], depths: dict[str, int], exclude: set[str]) -> None:
    """Queues "c" and "d" no worker names: weighed once per depth, as "*" workers' room."""
    workers = [WorkerView(f"w{i}", *shape) for i, shape in enumerate(shapes)]
    index = RoomIndex.of(workers)
    assert index.rooms(depths, exclude) == {q: index.room(q, d, exclude)
                                            for q, d in depths.items()}
    for depth in (1, 2, 4):
        assert index.has_room(depth, exclude) == any(
            w.free_for(depth) > 0 for w in workers if w.id not in exclude and w.queues)
