"""The dispatcher's picture of its workers, fed by heartbeats."""

from __future__ import annotations

from balancer.view import ClusterView
from common.models import WorkerInfo


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
