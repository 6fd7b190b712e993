"""Standing offers planned from the dispatcher's state, without Redis."""

from __future__ import annotations

from balancer.common.models import QueueConfig

from balancer.offers import StandingOffers
from tests.balancer.test_dispatch_state import cluster, idle

TOKEN = "7|dispatcher"


def test_a_queue_read_empty_gets_an_offer_written_once() -> None:
    state = idle(cluster())
    offers = StandingOffers()
    writes = offers.plan(state, TOKEN, frozenset())
    assert writes is not None and list(writes.put) == ["default"] and writes.delete == ()
    assert writes.put["default"].epoch == "7" and writes.put["default"].workers == (("w", 10, 0.0),)
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
