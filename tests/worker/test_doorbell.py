"""The doorbell fetch of a worker serving several partitions (worker/doorbell.py): its
sweep looks in every partition's inbox with one pipelined LLEN each and takes only from
those that hold entries, so an idle worker costs one round trip per sweep, not a script
call per partition; an entry nobody rang for is still found by the sweep. A partition
whose take fails (its master failing over) does not keep the worker from the others'
work."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis
from balancer.common.keys import Keys
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


class Looks:
    """The sweep's looks (its ByNode's calls) of one inbox: the commands of each."""

    def __init__(self, inbox: DoorbellInbox, monkeypatch: pytest.MonkeyPatch) -> None:
        self.runs: list[list[str]] = []
        calls = inbox._looks.calls

        def counted(commands: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
            self.runs.append([str(command[0]) for _, command in commands])
            return calls(commands)

        monkeypatch.setattr(inbox._looks, "calls", counted)


def _takes(inbox: DoorbellInbox, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The partitions a take of this inbox is sent to (each answers: nothing taken,
    nothing left). Patched on the inbox's own scripts, not on the class: the process's
    embedded cluster, which another test may have left running, takes on threads of its
    own, and a take of its partition 0 would be counted here (seen in CI)."""
    taken: list[int] = []
    for scripts in inbox.parts:
        def take_counted(*args: Any, _partition: int = scripts.keys.partition,
                         **kwargs: Any) -> tuple[list[bytes], int]:
            taken.append(_partition)
            return [], 0

        monkeypatch.setattr(scripts, "take_counted", take_counted)
    return taken


def test_an_idle_worker_sweeps_every_inbox_in_one_round_trip_and_takes_from_none(
        real: redis.Redis, inbox: DoorbellInbox, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _takes(inbox, monkeypatch)
    sent = Looks(inbox, monkeypatch)
    inbox._swept = 0.0  # a sweep is due
    assert inbox._fetch() == (None, 0)
    assert sent.runs == [["LLEN"] * COUNT]
    assert taken == []


def test_an_entry_nobody_rang_for_is_taken_from_its_partition_alone_at_the_sweep(
        real: redis.Redis, inbox: DoorbellInbox, settings: Settings,
        monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _takes(inbox, monkeypatch)
    real.rpush(Keys(settings.namespace, 2).inbox("w"), b"lease-without-a-note")
    inbox._swept = 0.0
    inbox._fetch()
    assert taken == [2]


def test_a_note_on_the_doorbell_makes_its_partition_due_without_a_sweep(
        real: redis.Redis, inbox: DoorbellInbox, monkeypatch: pytest.MonkeyPatch) -> None:
    taken = _takes(inbox, monkeypatch)
    inbox._fetch()  # the first fetch takes from every partition: none drained yet
    taken.clear()
    inbox._swept = time.monotonic()  # as if just swept (its wait ended: one is due)
    real.rpush(inbox.bell, b"3")
    sent = Looks(inbox, monkeypatch)
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
