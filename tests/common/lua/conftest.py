"""Every test of a Lua script runs twice: on fakeredis and on the real Redis (the shared
one at 127.0.0.1:6379, in a namespace of the test's own that is deleted afterwards), so
that a difference between the two shows as a failure of one of them."""

from __future__ import annotations

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.models import WorkerInfo
from balancer.common.scripts import Scripts

from tests.common.lua.db import TTL, Db, Q, W

BACKENDS = ["fake", "real"]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest) -> redis.Redis:
    """A client of fakeredis, or of the real Redis (its namespace dropped after the test)."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def db(client: redis.Redis, namespace: str) -> Db:
    """The leader lease taken by "dispatcher-1", worker W registered, the wake list empty."""
    keys = Keys(namespace)
    scripts = Scripts(client, keys)
    leader = scripts.leader("dispatcher-1", TTL)
    assert leader is not None
    scripts.heartbeat(W, WorkerInfo(W, (Q,), 4).to_blob(), TTL)
    client.delete(keys.wake)
    return Db(client, keys, scripts, leader)
