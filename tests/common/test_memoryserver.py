"""The embedded cluster's in-process Redis blocks on BLMOVE as a real one does: an idle
worker waits on its empty inbox instead of asking it again and again."""

from __future__ import annotations

import threading
import time
import uuid

import fakeredis
import pytest
import redis
from balancer.common import memoryserver
from balancer.common.connection import connect
from balancer.common.settings import Settings
from balancer.common.signals import Lease
from balancer.worker.inbox import Inbox
from balancer.worker.supervisor import Worker


@pytest.fixture
def client() -> redis.Redis:
    return fakeredis.FakeRedis(server=memoryserver.new_server())


def test_blmove_on_a_missing_list_waits_for_a_push_and_moves_the_first_entry(
        client: redis.Redis) -> None:
    got: list[object] = []
    waiter = threading.Thread(
        target=lambda: got.append(client.blmove("inbox", "fetched", 10, "LEFT", "RIGHT")))
    waiter.start()
    waiter.join(0.3)
    assert waiter.is_alive() and not got  # blocked, not answered nil at once
    other = fakeredis.FakeRedis(connection_pool=client.connection_pool)
    other.rpush("inbox", b"a", b"b")
    waiter.join(5)
    assert got == [b"a"]
    assert client.lrange("fetched", 0, -1) == [b"a"] and client.lrange("inbox", 0, -1) == [b"b"]


def test_blmove_answers_nil_when_its_timeout_passes(client: redis.Redis) -> None:
    began = time.monotonic()
    assert client.blmove("inbox", "fetched", 0.2, "LEFT", "RIGHT") is None
    assert time.monotonic() - began >= 0.19
    assert not client.exists("fetched")


def test_blmove_takes_and_puts_at_the_ends_it_is_told(client: redis.Redis) -> None:
    client.rpush("src", b"1", b"2", b"3")
    client.rpush("dst", b"x")
    assert client.blmove("src", "dst", 1, "RIGHT", "LEFT") == b"3"
    assert client.lrange("dst", 0, -1) == [b"3", b"x"]
    assert client.blmove("src", "src", 1, "LEFT", "RIGHT") == b"1"  # a rotation
    assert client.lrange("src", 0, -1) == [b"2", b"1"]


def test_blmove_refuses_a_key_of_another_type_and_a_bad_end(client: redis.Redis) -> None:
    client.set("text", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.blmove("text", "dst", 1, "LEFT", "RIGHT")
    client.rpush("src", b"1")
    with pytest.raises(redis.ResponseError, match="syntax"):
        client.execute_command("BLMOVE", "src", "dst", "UP", "RIGHT", 1)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        client.blmove("src", "text", 1, "LEFT", "RIGHT")
    assert client.lrange("src", 0, -1) == [b"1"]  # nothing moved


def test_an_idle_embedded_worker_waits_on_its_inbox_instead_of_polling_it(
        monkeypatch: pytest.MonkeyPatch, namespace: str) -> None:
    """With fakeredis's own BLMOVE, which answers nil at once, 4 idle slots fetched
    thousands of times a second and kept half a core busy."""
    fetches = 0
    fetch = Inbox._fetch

    def counted(self: Inbox) -> tuple[Lease | None, int]:
        nonlocal fetches
        if self.worker_id == "idle":  # not the process's embedded cluster, if it runs
            fetches += 1
        return fetch(self)

    client = connect(f"memory://idle-{uuid.uuid4().hex}")
    monkeypatch.setattr(Inbox, "_fetch", counted)
    worker = Worker(client, Settings(namespace=namespace, heartbeat_interval=0.2),
                    concurrency=4, pool="thread", name="idle")
    worker.start()
    try:
        time.sleep(1.0)
    finally:
        worker.shutdown(grace=2)
    assert 1 <= fetches <= 8, fetches
