"""Unit tests of the worker's threads run on fakeredis, with the Lua scripts' test
set-up (``tests.common.lua.db.Db``): tasks written as a submit writes them, leased to W."""

from __future__ import annotations

import pytest
import redis

from tests.common.lua.db import Db


@pytest.fixture
def db(fake: redis.Redis, namespace: str) -> Db:
    return Db.open(fake, namespace)
