"""balancer.scheduling: the dispatcher's pure choices, with a seeded random.Random."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from balancer.common.models import QueueConfig

from balancer import scheduling
from balancer.scheduling import (
    ALL_QUEUES,
    WorkerView,
    choose_worker,
    load,
    order_queues,
    plan_batch,
    queue_rank,
    queue_room,
    task_score,
)

DRAWS = 400


def worker(wid: str, capacity: int = 4, leased: int = 0, *, queues: tuple[str, ...] = ("q",),
           cpu: float = 0.0, memory: float = 0.0) -> WorkerView:
    return WorkerView(wid, frozenset(queues), capacity, leased, cpu, memory)


def picks(queue: str, workers: list[WorkerView], seed: int = 1,
          draws: int = DRAWS) -> Counter[str | None]:
    rng = random.Random(seed)
    chosen = (choose_worker(queue, workers, rng) for _ in range(draws))
    return Counter(w.id if w is not None else None for w in chosen)


# -- load and choose_worker ----------------------------------------------------------------


def test_load_is_the_share_of_slots_leased_on_an_idle_host() -> None:
    assert load(worker("a", capacity=4, leased=1)) == 0.25
    assert load(worker("a", capacity=4, leased=0)) == 0.0


def test_load_grows_with_host_cpu_and_with_memory_past_the_safe_level() -> None:
    idle = load(worker("a"))
    assert load(worker("a", cpu=0.8)) > idle
    assert load(worker("a", memory=0.5)) == idle  # below the safe level: no penalty
    assert load(worker("a", memory=0.95)) > idle


def test_least_loaded_worker_is_chosen() -> None:
    workers = [worker("busy", leased=3), worker("idle", leased=0), worker("half", leased=2)]
    assert picks("q", workers) == Counter({"idle": DRAWS})


def test_load_is_relative_to_capacity_not_absolute_count() -> None:
    workers = [worker("small", capacity=2, leased=1), worker("big", capacity=16, leased=4)]
    assert picks("q", workers) == Counter({"big": DRAWS})


def test_cpu_pressure_moves_work_to_the_other_worker() -> None:
    workers = [worker("hot", cpu=0.9), worker("cool", cpu=0.1)]
    assert picks("q", workers) == Counter({"cool": DRAWS})


def test_memory_pressure_moves_work_to_the_other_worker() -> None:
    workers = [worker("swapping", memory=0.97), worker("roomy", memory=0.6)]
    assert picks("q", workers) == Counter({"roomy": DRAWS})


def test_busy_host_still_gets_work_once_the_idle_one_is_fuller() -> None:
    # cpu 0.9 costs 0.45 of a worker's slots: a worker 3/4 full is worse.
    workers = [worker("hot", cpu=0.9), worker("full-ish", leased=3)]
    assert picks("q", workers) == Counter({"hot": DRAWS})


def test_worker_without_a_free_slot_is_never_chosen() -> None:
    workers = [worker("full", capacity=2, leased=2), worker("over", capacity=2, leased=5),
               worker("loaded", capacity=4, leased=3, cpu=1.0, memory=1.0)]
    assert picks("q", workers) == Counter({"loaded": DRAWS})


def test_no_candidate_gives_none() -> None:
    rng = random.Random(0)
    assert choose_worker("q", [], rng) is None
    assert choose_worker("q", [worker("full", capacity=1, leased=1)], rng) is None
    assert choose_worker("q", [worker("zero", capacity=0)], rng) is None
    assert choose_worker("q", [worker("other", queues=("x",))], rng) is None


def test_worker_not_serving_the_queue_is_never_chosen() -> None:
    workers = [worker("elsewhere", queues=("x", "y")), worker("here", leased=3)]
    assert picks("q", workers) == Counter({"here": DRAWS})


def test_star_queue_serves_every_queue() -> None:
    star = worker("star", queues=(ALL_QUEUES,))
    assert star.serves("anything")
    assert star.serves("q")
    assert picks("some-queue", [star, worker("plain")]) == Counter({"star": DRAWS})


def test_near_equal_workers_are_both_chosen_across_draws() -> None:
    workers = [worker("a"), worker("b", cpu=0.05)]  # 0.025 apart: within the spread
    counts = picks("q", workers)
    assert set(counts) == {"a", "b"}
    assert min(counts.values()) > DRAWS // 4


def test_choice_is_reproducible_for_a_seed() -> None:
    workers = [worker(str(i)) for i in range(5)]
    assert picks("q", workers, seed=42, draws=50) == picks("q", workers, seed=42, draws=50)


# -- plan_batch ----------------------------------------------------------------------------


def test_plan_batch_spreads_a_batch_evenly_across_equal_workers() -> None:
    workers = [worker("a"), worker("b"), worker("c")]
    plan = plan_batch("q", [f"t{i}" for i in range(9)], workers, random.Random(3))
    assert sorted(plan) == ["a", "b", "c"]
    assert [len(v) for v in plan.values()] == [3, 3, 3]
    assert sorted(t for ts in plan.values() for t in ts) == sorted(f"t{i}" for i in range(9))


def test_plan_batch_never_exceeds_free_slots() -> None:
    workers = [worker("a", capacity=3, leased=2), worker("b", capacity=4, leased=2),
               worker("c", capacity=2, leased=2)]
    plan = plan_batch("q", [f"t{i}" for i in range(10)], workers, random.Random(7))
    assert {w: len(ts) for w, ts in plan.items()} == {"a": 1, "b": 2}


def test_plan_batch_keeps_task_order_and_stops_when_full() -> None:
    plan = plan_batch("q", ["t1", "t2", "t3"], [worker("a", capacity=2)], random.Random(0))
    assert plan == {"a": ["t1", "t2"]}


def test_plan_batch_fills_the_emptier_worker_first() -> None:
    workers = [worker("full-ish", capacity=4, leased=3), worker("empty", capacity=4)]
    plan = plan_batch("q", ["t1", "t2", "t3"], workers, random.Random(0))
    assert plan["empty"][:2] == ["t1", "t2"]


def test_plan_batch_leaves_the_callers_views_unchanged() -> None:
    workers = [worker("a", leased=1)]
    plan_batch("q", ["t1", "t2"], workers, random.Random(0))
    assert workers[0].leased == 1


def test_plan_batch_ignores_workers_of_other_queues() -> None:
    workers = [worker("x", queues=("x",)), worker("q")]
    plan = plan_batch("q", ["t1", "t2"], workers, random.Random(0))
    assert plan == {"q": ["t1", "t2"]}


# -- queues --------------------------------------------------------------------------------


def test_order_queues_serves_higher_priority_first() -> None:
    heads = {"low": 1000.0, "high": 1000.0, "mid": 1000.0}
    configs = {"low": QueueConfig("low", priority=-1), "high": QueueConfig("high", priority=5),
               "mid": QueueConfig("mid")}
    assert order_queues(heads, configs, now_ms=1000.0, aging_ms=60_000) == ["high", "mid", "low"]


def test_order_queues_breaks_equal_priority_by_oldest_head() -> None:
    heads = {"b": 500.0, "a": 900.0}
    assert order_queues(heads, {}, now_ms=1000.0, aging_ms=0) == ["b", "a"]


def test_order_queues_skips_paused_queues() -> None:
    heads = {"paused": 0.0, "open": 1000.0}
    configs = {"paused": QueueConfig("paused", priority=9, paused=True)}
    assert order_queues(heads, configs, now_ms=1000.0, aging_ms=60_000) == ["open"]


def test_aging_lets_an_old_low_priority_head_overtake_a_fresh_higher_one() -> None:
    now = 1_000_000.0
    configs = {"low": QueueConfig("low", priority=0), "high": QueueConfig("high", priority=1)}
    fresh = {"low": now - 30_000, "high": now}  # low waited half an aging period
    assert order_queues(fresh, configs, now, aging_ms=60_000) == ["high", "low"]
    old = {"low": now - 120_000, "high": now}  # low waited two aging periods
    assert order_queues(old, configs, now, aging_ms=60_000) == ["low", "high"]


def test_queue_rank_adds_one_level_per_aging_period_and_ignores_future_heads() -> None:
    config = QueueConfig("q", priority=2)
    assert queue_rank(config, head_score=0.0, now_ms=180.0, aging_ms=60.0) == 5.0
    assert queue_rank(config, head_score=500.0, now_ms=100.0, aging_ms=60.0) == 2.0
    assert queue_rank(config, head_score=0.0, now_ms=100.0, aging_ms=0.0) == 2.0


@pytest.mark.parametrize(
    ("limit", "inflight", "room"),
    [(None, 0, None), (None, 100, None), (5, 0, 5), (5, 3, 2), (5, 5, 0), (5, 9, 0)],
)
def test_queue_room_is_what_the_concurrency_limit_leaves(limit: int | None, inflight: int,
                                                        room: int | None) -> None:
    assert queue_room(QueueConfig("q", concurrency_limit=limit), inflight) == room


def test_task_score_orders_by_arrival_within_a_priority() -> None:
    assert task_score(1000, 0, 60_000) < task_score(1001, 0, 60_000)


def test_task_score_orders_priority_before_arrival() -> None:
    aging = 60_000.0
    early_low = task_score(1_000_000, 0, aging)
    late_high = task_score(1_000_000 + 30_000, 1, aging)
    assert late_high < early_low
    # ... but only by up to one aging period per level.
    very_late_high = task_score(1_000_000 + 90_000, 1, aging)
    assert early_low < very_late_high


def test_prefetch_depth_is_one_for_unknown_or_long_tasks_and_grows_for_short_ones() -> None:
    assert scheduling.prefetch_depth(None) == 1
    assert scheduling.prefetch_depth(50.0) == 1
    assert scheduling.prefetch_depth(5.0) == 4
    assert scheduling.prefetch_depth(0.01) == scheduling.PREFETCH_MAX


def test_a_prefetching_worker_is_refilled_only_below_half_and_then_to_the_full_depth() -> None:
    worker = WorkerView("w", frozenset({"q"}), capacity=2, leased=5)
    assert worker.free_for(4) == 0  # 5 of 8 held: above half, wait
    worker.leased = 4
    plan = scheduling.plan_batch("q", [str(i) for i in range(10)], [worker],
                                 random.Random(0), depth=4)
    assert plan == {"w": ["0", "1", "2", "3"]}  # filled back to 8 in one batch


def test_nothing_is_prefetched_behind_a_slot_running_a_long_task() -> None:
    busy = WorkerView("w", frozenset({"q"}), capacity=1, leased=1, long_running=1)
    assert busy.free_for(8) == 0  # its only slot is taken by the long run
    assert busy.free_for(1) == 0
    half = WorkerView("w", frozenset({"q"}), capacity=2, leased=1, long_running=1)
    assert half.free_for(8) == 8  # the other slot is prefetched for as usual
    idle_again = WorkerView("w", frozenset({"q"}), capacity=1, leased=0, long_running=1)
    assert idle_again.free_for(8) == 8  # a long run that no longer holds a lease is over


def test_plan_batch_sends_short_tasks_past_a_worker_busy_with_a_long_run() -> None:
    long = WorkerView("long", frozenset({"q"}), capacity=1, leased=1, long_running=1)
    free = WorkerView("free", frozenset({"q"}), capacity=1, leased=0)
    plan = scheduling.plan_batch("q", [str(i) for i in range(6)], [long, free],
                                 random.Random(0), depth=8)
    assert plan == {"free": [str(i) for i in range(6)]}


def test_plan_batch_scales_to_a_thousand_workers_and_respects_every_room() -> None:
    rng = random.Random(7)
    workers = [WorkerView(f"w{i}", frozenset({"q"}), capacity=2, leased=rng.randint(0, 2))
               for i in range(1000)]
    room = sum(w.free for w in workers)
    plan = scheduling.plan_batch("q", [str(i) for i in range(room + 50)], workers, rng)
    assert sum(len(v) for v in plan.values()) == room
    by_id = {w.id: w for w in workers}
    assert all(len(ids) <= by_id[wid].free for wid, ids in plan.items())


def ids(workers: list[WorkerView]) -> list[str]:
    return [w.id for w in workers]


def test_an_offer_names_the_workers_on_the_least_loaded_hosts_first() -> None:
    busy_host = worker("a", cpu=0.8)
    full = worker("b", capacity=2, leased=2)  # its own slots are the script's to check
    assert ids(scheduling.offer_workers("q", [busy_host, full, worker("c")])) == ["b", "c", "a"]
    assert scheduling.offer_workers("q", [worker("draining", capacity=0)]) == []


def test_an_offer_does_not_flicker_with_the_noise_of_host_load() -> None:
    a, b = worker("a"), worker("b", cpu=0.1)
    assert ids(scheduling.offer_workers("q", [b, a])) == ["a", "b"]
    a.cpu = 0.15  # a little busier than b now: the same step, the same order
    assert ids(scheduling.offer_workers("q", [b, a])) == ["a", "b"]


def test_a_host_load_at_a_step_edge_keeps_the_step_offered_before() -> None:
    step = scheduling.OFFER_STEP
    edge = worker("a", cpu=step / scheduling.CPU_WEIGHT)  # exactly one step
    assert scheduling.offered_host_load(edge) == step
    below = worker("a", cpu=0.9 * step / scheduling.CPU_WEIGHT)  # noise just under it
    assert scheduling.offered_host_load(below) == 0.0  # without a previous step, it flips
    assert scheduling.offered_host_load(below, previous=step) == step  # with one, it stays
    far = worker("a", cpu=0.4 * step / scheduling.CPU_WEIGHT)  # half a step past the edge
    assert scheduling.offered_host_load(far, previous=step) == 0.0
    busy = worker("a", cpu=2.6 * step / scheduling.CPU_WEIGHT)
    assert scheduling.offered_host_load(busy, previous=step) == 2 * step
    b = worker("b", cpu=0.5 * step / scheduling.CPU_WEIGHT)
    assert ids(scheduling.offer_workers("q", [below, b], {"a": step})) == ["b", "a"]


def test_an_offer_names_a_few_workers_and_never_one_serving_every_queue() -> None:
    many = [worker(f"w{i}") for i in range(10)]
    assert len(scheduling.offer_workers("q", many)) == scheduling.OFFER_WORKERS
    assert scheduling.offer_workers("q", [worker("any", queues=(ALL_QUEUES,))]) == []


def test_the_refill_point_the_lease_script_checks_is_the_one_free_for_uses() -> None:
    for capacity, long_running in ((1, 0), (4, 0), (4, 1), (3, 2)):
        for leased in range(capacity * scheduling.PREFETCH_MAX + 1):
            w = worker("w", capacity, leased)
            w.long_running = long_running
            free = capacity * scheduling.PREFETCH_MAX - leased
            depth = scheduling.PREFETCH_MAX
            refills = w.free_for(depth) > 0
            assert refills == (free >= w.refill_at(depth)), (capacity, long_running, leased)
    assert worker("w", 4, 3).refill_at(1) == 1


def test_a_short_queue_is_not_prefetched_where_a_higher_priority_queue_shares_its_workers(
        ) -> None:
    configs = {"high": QueueConfig("high", priority=5), "low": QueueConfig("low")}
    short = 0.1  # ms: deep prefetch on its own
    alone = [worker("a", queues=("low",))]
    shared = [worker("a", queues=("low",)), worker("b", queues=("low", "high"))]
    every = [worker("a", queues=(ALL_QUEUES,))]
    assert scheduling.queue_depth("low", short, configs, alone) == scheduling.PREFETCH_MAX
    assert scheduling.queue_depth("low", short, configs, shared) == 1
    assert scheduling.queue_depth("low", short, configs, every) == 1
    assert scheduling.queue_depth("high", short, configs, shared) == scheduling.PREFETCH_MAX
    assert scheduling.queue_depth("low", 50.0, configs, alone) == 1  # long tasks: never


def _depth_by_definition(queue: str, mean: float | None, configs: dict[str, QueueConfig],
                         workers: list[WorkerView]) -> int:
    """The rule as stated: no prefetch where a worker serving the queue serves one of
    higher priority (every queue, for "*")."""
    depth = scheduling.prefetch_depth(mean)
    own = configs[queue].priority if queue in configs else 0
    higher = {q for q, c in configs.items() if c.priority > own}
    for w in workers:
        if w.serves(queue) and ((ALL_QUEUES in w.queues and higher) or higher & w.queues):
            return 1
    return depth


def test_every_queues_depth_at_once_follows_the_rule_for_any_priorities_and_workers() -> None:
    rng = random.Random(7)
    names = [f"q{i}" for i in range(8)]
    for _ in range(300):
        configs = {q: QueueConfig(q, priority=rng.randint(-2, 2))
                   for q in rng.sample(names, rng.randint(0, 8))}
        workers = [worker(f"w{i}", queues=tuple(rng.sample([*names, ALL_QUEUES],
                                                           rng.randint(1, 3))))
                   for i in range(rng.randint(0, 4))]
        means = {q: rng.choice([None, 0.1, 2.0, 50.0]) for q in names}
        assert scheduling.queue_depths(means, configs, workers) == {
            q: _depth_by_definition(q, m, configs, workers) for q, m in means.items()}


# -- tag limits ------------------------------------------------------------------------------


def test_admit_tagged_leases_up_to_each_tags_limit_counting_what_is_leased() -> None:
    ids = ["a", "b", "c", "d"]
    tags = {t: ("db",) for t in ids}
    admitted, counts = scheduling.admit_tagged(ids, tags, {"db": 3}, {"db": 1})
    assert admitted == ["a", "b"]
    assert counts == {"db": 3}


def test_admit_tagged_passes_over_a_full_tag_without_holding_up_the_tasks_behind() -> None:
    ids = ["db1", "db2", "plain", "io1", "db3", "other"]
    tags = {"db1": ("db",), "db2": ("db",), "db3": ("db",), "io1": ("io",),
            "other": ("unlimited",)}
    admitted, counts = scheduling.admit_tagged(ids, tags, {"db": 1, "io": 5}, {})
    assert admitted == ["db1", "plain", "io1", "other"]
    assert counts == {"db": 1, "io": 1}


def test_admit_tagged_needs_room_under_every_limited_tag_of_a_task() -> None:
    tags = {"a": ("db", "gpu"), "b": ("gpu",), "c": ("db",)}
    admitted, counts = scheduling.admit_tagged(["a", "b", "c"], tags, {"db": 5, "gpu": 1},
                                               {"db": 0})
    assert admitted == ["a", "c"]  # b finds gpu taken by a
    assert counts == {"db": 2, "gpu": 1}


def test_admit_tagged_stops_at_the_cap_and_admits_nothing_over_a_lowered_limit() -> None:
    ids = ["a", "b", "c"]
    assert scheduling.admit_tagged(ids, {}, {"db": 1}, {}, cap=2) == (["a", "b"], {})
    tags = {t: ("db",) for t in ids}
    assert scheduling.admit_tagged(ids, tags, {"db": 2}, {"db": 5}) == ([], {"db": 5})
    assert scheduling.admit_tagged(ids, tags, {"db": 2}, {}, cap=0) == ([], {})


def test_admit_tagged_leaves_its_inputs_as_they_were() -> None:
    leased = {"db": 0}
    scheduling.admit_tagged(["a"], {"a": ("db",)}, {"db": 1}, leased)
    assert leased == {"db": 0}


def test_what_an_offer_carries_of_a_host_changes_only_when_its_offer_basis_does() -> None:
    """The view recomputes offers (over every worker) only when some worker's offer_basis
    changed: within one, offered_host_load is the same whatever step was offered before."""
    rng = random.Random(11)
    for _ in range(3000):
        a, b = worker("a", cpu=rng.uniform(0, 2)), worker("a", cpu=rng.uniform(0, 2))
        if scheduling.offer_basis(a) != scheduling.offer_basis(b):
            continue
        for previous in (None, *(k * scheduling.OFFER_STEP for k in range(6))):
            assert (scheduling.offered_host_load(a, previous)
                    == scheduling.offered_host_load(b, previous))
