"""Standing offers planned from the dispatcher's state, without Redis."""

from __future__ import annotations

from balancer.common import codec, signals
from balancer.common.models import QueueConfig, WorkerInfo
from balancer.common.prefetch import PREFETCH_MAX
from balancer.common.signals import Offer

from balancer.offers import StandingOffers
from balancer.scheduling import OFFER_WORKERS
from tests.balancer.test_dispatch_state import cluster, feed, idle

TOKEN = "7|dispatcher"


def test_a_queue_read_empty_gets_an_offer_written_once() -> None:
    state = idle(cluster())
    offers = StandingOffers()
    writes = offers.plan(state, TOKEN, frozenset())
    assert writes is not None and list(writes.put) == ["default"] and writes.delete == ()
    offer = writes.put["default"]
    assert offer.epoch == "7" and offer.workers == (("w", 10, 0.0, 10),)
    offers.written(writes)
    assert offers.plan(state, TOKEN, frozenset()) is None  # nothing it depends on changed


def test_an_offer_is_withdrawn_when_its_queue_is_paused_or_troubled() -> None:
    state = idle(cluster())
    offers = StandingOffers()
    offers.written(offers.plan(state, TOKEN, frozenset()))  # type: ignore[arg-type]
    troubled = offers.plan(state, TOKEN, frozenset({"default"}))
    assert troubled is not None and troubled.delete == ("default",)
    state.refreshed({"default": QueueConfig("default", paused=True)})
    paused = offers.plan(state, TOKEN, frozenset())
    assert paused is not None and paused.delete == ("default",) and not paused.put


def test_an_offer_stands_while_its_queue_fills_and_a_new_leader_forgets_it() -> None:
    state = idle(cluster())
    offers = StandingOffers()
    offers.written(offers.plan(state, TOKEN, frozenset()))  # type: ignore[arg-type]
    state.stale()  # work came: the queue is not known empty any more
    kept = offers.plan(state, TOKEN, frozenset())
    assert kept is not None and not kept.put and not kept.delete and "default" in kept.wanted
    offers.forget()
    assert offers.current == {} and offers.plan(state, TOKEN, frozenset()) is not None


def _beat(worker: str, capacity: int, mean_ms: float | None, long_running: int = 0,
          queues: tuple[str, ...] = ("default",)) -> signals.Signal:
    durations = {"default": mean_ms} if mean_ms is not None else {}
    blob = WorkerInfo(worker, queues, capacity, long_running=long_running,
                      durations=durations).to_blob()
    return signals.Signal(signals.HEARTBEAT, worker, 0, blob)


def _offer(*beats: signals.Signal) -> Offer:
    """The offer planned for "default" once these workers beat (the first is "w", which
    ``cluster`` registers)."""
    state = cluster()
    feed(state, *beats)
    writes = StandingOffers().plan(idle(state), TOKEN, frozenset())
    assert writes is not None
    return writes.put["default"]


def test_an_offer_gives_places_behind_running_tasks_when_the_queue_prefetches() -> None:
    """Tasks of 0.5 ms: 32 per slot (PREFETCH_MAX), as the dispatcher would lease them."""
    offer = _offer(_beat("w", 2, 0.5))
    assert offer.depth == 32 and offer.workers == (("w", 2, 0.0, 64),)
    assert signals.parse_offer(offer.encode()) == offer


def test_an_offer_depth_is_a_power_of_two_and_none_for_long_or_unknown_tasks() -> None:
    assert _offer(_beat("w", 1, 0.9)).depth == 16  # 22 per slot, rounded down
    assert _offer(_beat("w", 1, 8.0)).depth == 2
    assert _offer(_beat("w", 1, 15.0)).workers == (("w", 1, 0.0, 1),)  # no prefetch
    assert _offer(_beat("w", 1, None)).depth == 1  # run time not known yet


def test_a_slot_running_a_long_task_gets_no_places_in_an_offer() -> None:
    offer = _offer(_beat("w", 3, 0.5, long_running=1))
    assert offer.workers == (("w", 3, 0.0, 1 + 2 * 32),)


def test_an_offer_that_cannot_name_every_worker_of_its_queue_gives_no_places() -> None:
    """A worker left out (more than OFFER_WORKERS, or one serving every queue) may have a
    free slot while the offered ones are busy: no task may wait behind theirs then."""
    named = [_beat(f"w{i}" if i else "w", 1, 0.5) for i in range(OFFER_WORKERS)]
    assert _offer(*named).depth == 32
    offer = _offer(*named, _beat("x", 1, 0.5))
    assert offer.depth == 1 and {w[3] for w in offer.workers} == {1}
    offer = _offer(named[0], _beat("star", 1, None, queues=("*",)))
    assert offer.depth == 1 and offer.workers == (("w", 1, 0.0, 1),)


def test_a_new_run_time_that_changes_the_depth_rewrites_the_offer_and_noise_does_not(
        ) -> None:
    state = cluster()
    feed(state, _beat("w", 1, 0.5))
    offers = StandingOffers()
    offers.written(offers.plan(idle(state), TOKEN, frozenset()))  # type: ignore[arg-type]
    feed(state, _beat("w", 1, 0.55))  # 36 per slot: still 32
    assert offers.plan(state, TOKEN, frozenset()) is None
    feed(state, _beat("w", 1, 3.0))  # 6 per slot: 4
    writes = offers.plan(state, TOKEN, frozenset())
    assert writes is not None and writes.put["default"].depth == 4


def test_an_offer_read_from_an_older_dispatcher_gives_each_worker_its_capacity() -> None:
    raw = codec.pack(["3", [["w", 2, 0.25]], ["other"]])
    assert signals.parse_offer(raw) == Offer("3", (("w", 2, 0.25, 2),), ("other",), 1)


def test_an_offer_whose_places_or_depth_are_out_of_bounds_is_no_offer() -> None:
    for workers, depth in (([["w", 2, 0.0, 1]], 1),  # fewer places than slots
                           ([["w", 2, 0.0, 9]], 4),  # more than a depth of 4 allows
                           ([["w", 2, 0.0, 2]], 0),
                           ([["w", 2, 0.0, 2]], PREFETCH_MAX + 1)):
        assert signals.parse_offer(codec.pack(["3", workers, [], depth])) is None
