"""Every test of a Lua script runs twice: on fakeredis and on the real Redis (the shared
one at 127.0.0.1:6379, in a namespace of the test's own that is deleted afterwards), so
that a difference between the two shows as a failure of one of them."""

from __future__ import annotations

import pytest
import redis

from tests.common.lua.db import Db

BACKENDS = ["fake", "real"]


@pytest.fixture(params=BACKENDS)
def client(request: pytest.FixtureRequest) -> redis.Redis:
    """A client of fakeredis, or of the real Redis (its namespace dropped after the test)."""
    return request.getfixturevalue(request.param)  # type: ignore[no-any-return]


@pytest.fixture
def db(client: redis.Redis, namespace: str) -> Db:
    return Db.open(client, namespace)
