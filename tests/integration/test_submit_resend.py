"""A submit made while Redis is down for a moment (a restart, a failover) waits it out and
is sent again once Redis answers, instead of failing: a real redis-server stopped and
started again under a client's submit, then serve and a worker run the flow."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from balancer.common.connection import connect
from balancer.common.keys import Keys

from balancer import Flow
from tests.conftest import Processes, RedisServer, wait_for
from tests.integration import tasks

pytestmark = pytest.mark.integration


def test_a_submit_while_redis_restarts_is_sent_again_once_it_answers(
        procs: Processes, namespace: str) -> None:
    server = RedisServer().start()
    try:
        client = connect(server.url)
        with Flow("warm") as flow:  # the client's connections are made and in use
            tasks.constant(1)
        flow.submit(client, namespace=namespace)
        server.stop(kill=True)
        restart = threading.Timer(1.5, server.start)
        restart.start()
        started = time.monotonic()
        with Flow("through-a-restart") as flow:
            tasks.add(tasks.constant(2), 3)
        run = flow.submit(client, namespace=namespace)  # Redis is down: it waits
        waited = time.monotonic() - started
        restart.join()
        assert 1.0 < waited < 10.0, waited
        procs.env["BALANCER_REDIS_URL"] = server.url
        procs.serve()
        procs.worker("--pool", "thread")
        wait_for(lambda: redis.Redis.from_url(server.url).zcard(Keys(namespace).workers),
                 timeout=30)
        assert run.wait(timeout=60) == "completed"
        assert run.results()["add"] == 5
    finally:
        server.cleanup()
