"""The Sentinel pool's questions to the sentinels: asked in a thread of their own, so
that sentinels that hang never hold up a call. The sentinels here are a stand-in that
names the machine's Redis and hangs when told to; the calls go to that Redis."""

from __future__ import annotations

import threading
import time
from urllib.parse import urlparse

import pytest
import redis
from balancer.common import sentinelpool
from balancer.common.connection import Direct
from balancer.common.sentinelpool import MasterPool


class Sentinels:
    """A sentinel manager (what redis-py's pool asks) that names ``address``."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.hang = threading.Event()  # set: each question waits for ``release``
        self.release = threading.Event()
        self.hanging = threading.Event()  # set while a question waits

    def discover_master(self, service: str) -> tuple[str, int]:
        if self.hang.is_set():
            self.hanging.set()
            self.release.wait(60)
        return self.address


def test_sentinels_that_hang_never_hold_up_a_call(redis_url: str) -> None:
    """A question to sentinels that never answer (a host down behind a firewall dropping
    packets) waits in the pool's asker thread; a call made meanwhile, even one after a
    quiet that waits for the answer, goes on with the master it knew. Before, the call
    asked itself and waited out every sentinel's timeout (6 s a call, in a probe)."""
    url = urlparse(redis_url)
    if url.path not in ("", "/", "/0"):
        pytest.skip("the stand-in names database 0 of the test Redis")
    sentinels = Sentinels((url.hostname or "127.0.0.1", url.port or 6379))
    pool = MasterPool("svc", sentinels)
    client = redis.Redis(connection_pool=pool)
    direct = Direct(client)
    try:
        assert direct.call("PING") == b"PONG" and client.ping()
        sentinels.hang.set()
        time.sleep(sentinelpool.STALE + 0.1)  # the next use asks, and waits ASK_WAIT

        def calls() -> None:
            for _ in range(3):
                assert direct.call("PING") == b"PONG" and client.ping()
                time.sleep(sentinelpool.RECHECK)

        caller = threading.Thread(target=calls)
        caller.start()
        caller.join(30)
        assert not caller.is_alive()  # done while the question still hangs:
        assert sentinels.hanging.is_set() and not sentinels.release.is_set()
    finally:
        sentinels.release.set()
        pool.disconnect()
