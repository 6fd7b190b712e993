"""A process's connections leave a master the sentinels no longer name, while it is still a
writable master (a manual failover leaves it one for about ten seconds): its pooled
commands, its own connections (``Direct``) and a fetch blocked on it. Private master,
replica and sentinels."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest
import redis
from balancer.common import sentinelpool
from balancer.common.connection import Direct, MasterMoved, connect

from tests.conftest import wait_for
from tests.integration.topologies import SERVICE, SentinelSet

pytestmark = pytest.mark.integration


def test_connections_move_to_the_named_master_while_the_old_one_still_takes_writes(
        sentinels: SentinelSet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="balancer")
    client = connect(sentinels.url)
    pool = client.connection_pool
    assert isinstance(pool, sentinelpool.MasterPool)
    direct = Direct(client)
    blocking = Direct(client, read_timeout=60.0)
    old_port, new_port = sentinels.master_port(), sentinels.replicas[0].port
    client.set("k", "before")
    assert direct.call("SET", "d", "before") == b"OK"
    blocking.call("PING")
    fetched: list[Any] = []

    def fetch() -> None:  # a worker's fetch, blocked on the old master for 30 s
        try:
            fetched.append(blocking.call("BLMPOP", 30, 1, "inbox", "LEFT"))
        except redis.ConnectionError as exc:  # MasterMoved is one
            fetched.append(exc)

    fetcher = threading.Thread(target=fetch, daemon=True)
    fetcher.start()
    redis.Redis(port=sentinels.sentinels[0].port).execute_command(
        "SENTINEL", "FAILOVER", SERVICE)
    wait_for(lambda: all(_named(s.port) == new_port for s in sentinels.sentinels),
             timeout=30, interval=0.05)
    old = redis.Redis(port=old_port)
    assert old.execute_command("ROLE")[0] == b"master"  # still writable, for a while
    time.sleep(sentinelpool.RECHECK)  # the blocked fetch's watch asks them meanwhile
    client.set("k", "after")
    assert f"name 127.0.0.1:{new_port} the master of {SERVICE}" in caplog.text
    new = redis.Redis(port=new_port)
    assert new.get("k") == b"after" and old.get("k") == b"before"
    assert direct.call("SET", "d", "after") == b"OK"  # its own connection moved too
    assert new.get("d") == b"after" and old.get("d") == b"before"
    fetcher.join(timeout=5)  # cut off at the move, not after its 30 s block
    assert not fetcher.is_alive()
    assert isinstance(fetched[0], MasterMoved)
    new.rpush("inbox", "lease")  # its next fetch waits on the new master
    assert blocking.call("BLMPOP", 5, 1, "inbox", "LEFT") == [b"inbox", [b"lease"]]


def test_sentinels_that_do_not_answer_leave_connections_on_the_master(
        sentinels: SentinelSet) -> None:
    client = connect(sentinels.url)
    direct = Direct(client)
    assert direct.call("SET", "k", "1") == b"OK"
    assert client.get("k") == b"1"  # a pooled connection, open
    for sentinel in sentinels.sentinels:
        sentinel.stop(kill=True)
    time.sleep(sentinelpool.RECHECK)
    assert direct.call("GET", "k") == b"1"  # asked, unanswered: the master still serves
    assert client.get("k") == b"1"  # (a new connection would need the sentinels)


def _named(port: int) -> int:
    return int(redis.Redis(port=port).sentinel_get_master_addr_by_name(SERVICE)[1])

