"""The doorbell fetch of a worker serving several partitions (worker/doorbell.py): its
sweep looks in every partition's inbox with one pipelined LLEN each and takes only from
those that hold entries, so an idle worker costs one round trip per sweep, not a script
call per partition; an entry nobody rang for is still found by the sweep. A partition
whose take fails (its master failing over) does not keep the worker from the others'
work."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis
from balancer.common.connection import Direct
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.worker.doorbell import DoorbellInbox

from tests.worker.test_inbox import entry

COUNT = 4


@pytest.fixture
def inbox(real: redis.Redis, settings: Settings) -> DoorbellInbox:
    box = DoorbellInbox("w", real, Keys(settings.namespace), COUNT, lambda lease: None,
                        threading.Event())
    box.block = 0.05  # the blocking read on the doorbell ends at once here
    return box


class RoundTrips:
    """The commands of each round trip of several commands (Direct.calls: the sweep's)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[list[str]] = []
        calls = Direct.calls

        def counted(direct: Direct, *commands: tuple[Any, ...]) -> list[Any]:
            self.runs.append([str(c[0]) for c in commands])
            return calls(direct, *commands)

        monkeypatch.setattr(Direct, "calls", counted)


def _takes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The partitions a take is sent to (each answers: nothing taken, nothing left)."""
    taken: list[int] = []

    def take_counted(scripts: Scripts, *args: Any, **kwargs: Any) -> tuple[list[bytes], int]:
        taken.append(scripts.keys.partition)
        return [], 0

    monkeypatch.setattr(Scripts, "take_counted", take_counted)
    return taken


def test_an_idle_worker_sweeps_every_inbox_in_one_round_trip_and_takes_from_none(
        real: redis.Redis, inbox: DoorbellInbox, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _takes(monkeypatch)
    sent = RoundTrips(monkeypatch)
    inbox._swept = 0.0  # a sweep is due
    assert inbox._fetch() == (None, 0)
    assert sent.runs == [["LLEN"] * COUNT]
    assert taken == []


def test_an_entry_nobody_rang_for_is_taken_from_its_partition_alone_at_the_sweep(
        real: redis.Redis, inbox: DoorbellInbox, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _takes(monkeypatch)
    real.rpush(Keys(settings.namespace, 2).inbox("w"), b"lease-without-a-note")
    inbox._swept = 0.0
    inbox._fetch()
    assert taken == [2]


def test_a_note_on_the_doorbell_makes_its_partition_due_without_a_sweep(
        real: redis.Redis, inbox: DoorbellInbox, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _takes(monkeypatch)
    inbox._fetch()  # the first fetch takes from every partition: none drained yet
    taken.clear()
    inbox._swept = time.monotonic()  # as if just swept (its wait ended: one is due)
    real.rpush(inbox.bell, b"3")
    sent = RoundTrips(monkeypatch)
    inbox._fetch()  # reads the note
    inbox._fetch()  # takes from partition 3
    assert taken == [3] and sent.runs == []


def test_a_partition_that_fails_its_take_does_not_hold_up_the_others(
        real: redis.Redis, inbox: DoorbellInbox, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for p, task_id in ((0, "t0"), (1, "t1")):  # a lease in each, as assign.lua leaves it
        keys = Keys(settings.namespace, p)
        real.sadd(keys.leases("w"), f"{task_id}|1.1.1")
        real.rpush(keys.inbox("w"), entry(task_id))
    take = inbox.parts[0].take_counted

    def down(*args: object, **kwargs: object) -> object:
        raise redis.ConnectionError("partition 0's master is failing over")

    monkeypatch.setattr(inbox.parts[0], "take_counted", down)
    lease, _ = inbox._fetch()
    assert lease is not None and (lease.task_id, lease.partition) == ("t1", 1)
    # Partition 0 stays due: once it answers, its lease is taken.
    monkeypatch.setattr(inbox.parts[0], "take_counted", take)
    lease, _ = inbox._fetch()
    assert lease is not None and lease.task_id == "t0"
