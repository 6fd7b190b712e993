"""The worker's shared bookkeeping: leases held, long runs, durations."""

from __future__ import annotations

import threading
import time

from balancer.common.prefetch import prefetch_depth
from balancer.common.signals import Lease
from balancer.worker.holding import FORGET_AFTER, Holding


def lease(task_id: str, queue: str = "q") -> Lease:
    return Lease(task_id, "1.1.1", queue, "f", None, "m:f", "f", b"", b"")


def test_held_leases_are_known_until_released() -> None:
    holding = Holding()
    holding.add(lease("a"))
    holding.add(lease("b"))
    holding.release("a")
    assert holding.held_ids() == {"b"} and len(holding) == 1


def test_only_runs_past_the_threshold_are_reported_and_only_once() -> None:
    holding = Holding()
    for t in ("a", "b"):
        holding.add(lease(t))
    holding.start("a")
    time.sleep(0.06)
    holding.start("b")
    assert [x.task_id for x in holding.running_longer_than(0.05)] == ["a"]
    assert holding.running_longer_than(0.05) == []


def test_a_reported_long_run_counts_until_its_lease_is_released() -> None:
    holding = Holding()
    holding.add(lease("a"))
    holding.start("a")
    time.sleep(0.06)
    assert holding.long_running() == 0  # not reported yet
    holding.running_longer_than(0.05)
    assert holding.long_running() == 1
    holding.release("a")
    assert holding.long_running() == 0


def test_a_worker_runs_short_tasks_when_a_queue_mean_is_under_the_prefetch_horizon() -> None:
    holding = Holding()
    assert not holding.runs_short_tasks()  # nothing known yet
    holding.finish("slow", 500.0)
    assert not holding.runs_short_tasks()
    holding.finish("fast", 0.5)
    assert holding.runs_short_tasks()


def test_the_marker_knows_when_the_oldest_run_turns_long_and_waits_for_a_start_if_none(
        ) -> None:
    holding = Holding()
    assert holding.next_long_in(0.05) is None  # nothing runs: nothing to wait for
    threading.Timer(0.05, holding.start, ["a"]).start()
    holding.wait_for_start(timeout=5.0)  # returns when "a" starts, not after 5 s
    delay = holding.next_long_in(0.05)
    assert delay is not None and 0.0 < delay <= 0.05
    time.sleep(0.06)
    assert holding.next_long_in(0.05) == 0.0
    holding.running_longer_than(0.05)
    assert holding.next_long_in(0.05) is None  # reported: no longer waited for


def test_durations_are_a_moving_mean_per_queue() -> None:
    holding = Holding()
    holding.finish("q", 10.0)
    holding.finish("q", 20.0)
    holding.finish("r", 1.0)
    assert holding.durations() == {"q": 12.0, "r": 1.0}


def test_a_first_slow_run_then_fast_ones_are_news_each_time_the_prefetch_doubles() -> None:
    holding, news = Holding(), []
    holding.on_news = lambda: news.append(holding.durations()["q"])
    holding.finish("q", 170.0)  # the first run imports the task's module
    for _ in range(40):
        holding.finish("q", 1.0)
    # Told at once, not at the next heartbeat: prefetch 1, 2, 4, 8, then 16 per slot.
    assert [prefetch_depth(ms) for ms in news] == [1, 2, 4, 8, 16]


def test_the_first_duration_of_a_queue_and_a_change_of_prefetch_eligibility_are_news() -> None:
    holding, news = Holding(), []
    holding.on_news = lambda: news.append(holding.durations())
    holding.finish("q", 1.0)  # first: the dispatcher may prefetch for q from now on
    holding.finish("q", 1.2)
    assert len(news) == 1
    for _ in range(10):  # tasks of q turn long: prefetching them must stop at once
        holding.finish("q", 500.0)
    assert len(news) == 2 and news[1]["q"] >= 10.0


def test_the_mean_of_a_queue_not_run_for_a_while_is_left_out_of_reports_and_forgotten(
        ) -> None:
    now = [1000.0]
    holding = Holding(clock=lambda: now[0])
    holding.finish("old", 5.0)
    now[0] += FORGET_AFTER / 2
    holding.finish("recent", 1.0)
    now[0] += FORGET_AFTER / 2 + 1
    assert holding.durations() == {"recent": 1.0}
    holding.finish("old", 9.0)  # run again: a first mean, not the old one moved
    assert holding.durations() == {"old": 9.0, "recent": 1.0}
