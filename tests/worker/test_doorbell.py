"""The fetch of a worker serving several partitions (worker/doorbell.py), on a real Redis:
a partition whose take fails (its master failing over) does not keep the worker from the
others' work, and is taken from again once it answers."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.signals import Lease
from balancer.worker.doorbell import DoorbellInbox

from tests.worker.test_inbox import entry

COUNT = 3


def _lease(client: redis.Redis, keys: Keys, task_id: str) -> None:
    """A lease in worker "w"'s inbox of ``keys``' partition, as assign.lua leaves it."""
    client.sadd(keys.leases("w"), f"{task_id}|1.1.1")
    client.rpush(keys.inbox("w"), entry(task_id))


@pytest.fixture
def box(real: redis.Redis, namespace: str) -> Iterator[DoorbellInbox]:
    stopping = threading.Event()
    taken: list[Lease] = []
    inbox = DoorbellInbox("w", real, Keys(namespace), COUNT, taken.append, stopping)
    yield inbox
    stopping.set()
    inbox.close(timeout=1.0)


def test_a_partition_that_fails_its_take_does_not_hold_up_the_others(
        real: redis.Redis, namespace: str, box: DoorbellInbox,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _lease(real, Keys(namespace, 0), "t0")
    _lease(real, Keys(namespace, 1), "t1")
    take = box.parts[0].take_counted

    def down(*args: object, **kwargs: object) -> object:
        raise redis.ConnectionError("partition 0's master is failing over")

    monkeypatch.setattr(box.parts[0], "take_counted", down)
    lease, _ = box._fetch()
    assert lease is not None and (lease.task_id, lease.partition) == ("t1", 1)
    # Partition 0 stays due: once it answers, its lease is taken.
    monkeypatch.setattr(box.parts[0], "take_counted", take)
    lease, _ = box._fetch()
    assert lease is not None and lease.task_id == "t0"
