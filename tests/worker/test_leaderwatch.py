"""What a worker says when no dispatcher leads its namespace, and when one does again."""

from __future__ import annotations

import logging

import pytest
from balancer.worker.leaderwatch import LeaderWatch


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records]


def test_no_leader_is_said_once_past_the_patience_and_its_return_once(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "worker")
    watch = LeaderWatch("w1", "ns", patience=15.0, every=5.0)
    assert watch.due(0.0)
    for t in (0.0, 5.0, 10.0):
        watch.saw(t, [0])
        assert not watch.due(t + 4.9)
    assert _said(caplog) == []  # a serve started after the workers is not reported
    for t in (15.0, 20.0, 25.0):
        watch.saw(t, [0])
    assert _said(caplog) == [
        "worker=w1: no dispatcher has led namespace 'ns' for 15s: tasks reach workers only"
        " through `balancer serve`, run on the same Redis (and database) with the same"
        " BALANCER_NAMESPACE"]
    watch.saw(30.0, [])
    watch.saw(35.0, [])
    assert _said(caplog)[1:] == ["worker=w1: a dispatcher leads namespace 'ns' again; tasks come"]


def test_a_failover_within_the_patience_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    watch = LeaderWatch("w1", "ns", patience=15.0, every=5.0)
    for t, unled in ((0.0, []), (5.0, [0]), (10.0, [0]), (15.0, []), (20.0, [1]),
                     (30.0, [])):
        watch.saw(t, unled)
    assert _said(caplog) == []


def test_the_partitions_without_a_leader_are_named(caplog: pytest.LogCaptureFixture) -> None:
    watch = LeaderWatch("w1", "ns", patience=1.0, every=1.0)
    watch.saw(0.0, [1, 2])
    watch.saw(1.0, [1, 2])
    assert "namespace 'ns' (partitions 1, 2) for 1s" in _said(caplog)[0]
