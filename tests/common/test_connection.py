"""Direct: a thread's own connection for the calls on every task's path."""

from __future__ import annotations

import logging

import pytest
import redis
from balancer.common.connection import Direct


def test_a_note_sent_without_waiting_lands_before_the_next_call(
        real: redis.Redis, namespace: str) -> None:
    direct = Direct(real)
    key = f"{{{namespace}}}:note"
    direct.send("HSET", key, "0", "a b")
    direct.send("HDEL", key, "0")
    direct.send("HSET", key, "1", "c")
    # Replies read raw: plain ones, alike in every protocol version redis-py may speak.
    assert direct.call("HEXISTS", key, "0") == 0
    assert direct.call("HGET", key, "1") == b"c"


def test_a_refused_note_is_logged_and_the_next_call_gets_its_own_reply(
        real: redis.Redis, namespace: str, caplog: pytest.LogCaptureFixture) -> None:
    direct = Direct(real)
    key = f"{{{namespace}}}:note"
    real.set(key, "a string")
    with caplog.at_level(logging.ERROR):
        direct.send("HSET", key, "0", "x")  # WRONGTYPE
        assert direct.call("GET", key) == b"a string"
    assert "refused" in caplog.text
