"""The dispatcher's picture of its workers, fed by heartbeats."""

from __future__ import annotations

import random

import pytest
from balancer.common.models import WorkerInfo

from balancer.view import ClusterView


def beat(view: ClusterView, worker: str, durations: dict[str, float]) -> None:
    info = WorkerInfo(worker, ("q",), capacity=2, durations=durations)
    view.heartbeat(worker, 0, info.to_blob(), now=1.0)


def test_queue_durations_are_the_mean_over_workers_and_forget_departed_ones() -> None:
    view = ClusterView()
    beat(view, "a", {"q": 2.0})
    beat(view, "b", {"q": 4.0})
    assert view.mean_duration("q") == 3.0
    view.forget("b")
    assert view.mean_duration("q") == 2.0
    view.forget("a")
    assert view.mean_duration("q") is None
    assert view.durations == {"q": {}}


def test_an_ack_sets_what_the_worker_holds_and_ends_long_runs_it_no_longer_holds() -> None:
    view = ClusterView()
    info = WorkerInfo("a", ("q",), capacity=2, long_running=1)
    view.heartbeat("a", 6, info.to_blob(), now=1.0)
    worker = view.workers["a"]
    assert (worker.leased, worker.long_running) == (6, 1)
    assert worker.free_for(8) == 0  # one slot busy with a long run, 5 leases behind it
    view.acked("a", 3)
    assert (worker.leased, worker.long_running) == (3, 1)
    view.acked("a", 0)  # holds nothing: the long run is over
    assert (worker.leased, worker.long_running) == (0, 0)
    assert worker.free_for(8) == 16


def test_an_ack_of_an_unknown_worker_is_ignored() -> None:
    view = ClusterView()
    view.acked("ghost", 3)
    assert view.workers == {}


def test_a_queues_mean_duration_stays_the_mean_through_many_changes() -> None:
    """The mean is kept as a running sum (a round reads it per queue), summed afresh now
    and then so that rounding does not pile up."""
    view = ClusterView()
    rng = random.Random(5)
    for i in range(2000):
        beat(view, f"w{rng.randrange(30)}", {"q": rng.choice([0.1, 0.3, 1.7, 25.0])})
        if i % 97 == 0:
            view.forget(f"w{rng.randrange(30)}")
        seen = list(view.durations["q"].values())
        mean = view.mean_duration("q")
        assert mean == (None if not seen else pytest.approx(sum(seen) / len(seen), abs=1e-9))


def test_offers_are_looked_at_again_only_when_what_they_weigh_changed() -> None:
    view = ClusterView()

    def heartbeat(leased: int, pressure: float, queues: tuple[str, ...] = ("q",)) -> int:
        info = WorkerInfo("a", queues, capacity=2, pressure=pressure)
        view.heartbeat("a", leased, info.to_blob(), now=1.0)
        return view.version

    first = heartbeat(0, 0.0)
    assert heartbeat(2, 0.01) == first  # leases, and host noise within a half step
    assert heartbeat(2, 0.3) > first  # the host's load moved by a half step
    assert heartbeat(2, 0.3, ("q", "r")) > first + 1  # the queues it serves


def test_a_worker_of_another_release_serves_nothing_and_is_logged_once(
        caplog: pytest.LogCaptureFixture) -> None:
    from balancer.common import codec, protocol

    view = ClusterView()
    older = WorkerInfo("old", ("q",), capacity=2).to_blob()
    data = codec.unpack(older)
    del data["protocol"], data["release"]  # as a release from before they were reported
    older = codec.pack(data)
    for now in (1.0, 2.0, 3.0):
        view.heartbeat("old", 0, older, now=now)
    assert view.workers["old"].queues == frozenset()  # never leased to, never offered
    said = [r.getMessage() for r in caplog.records if "worker=old runs release" in
            r.getMessage()]
    assert len(said) == 1 and "protocol 0" in said[0] and "gets no tasks" in said[0]

    newer = WorkerInfo("new", ("q",), capacity=2, protocol=protocol.VERSION + 1,
                       release="9.9.9")
    view.heartbeat("new", 0, newer.to_blob(), now=1.0)
    assert view.workers["new"].queues == frozenset()
    view.heartbeat("same", 0, WorkerInfo("same", ("q",), capacity=2).to_blob(), now=1.0)
    assert view.workers["same"].queues == frozenset({"q"})
