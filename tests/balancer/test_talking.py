"""What client code is told when Redis cannot be reached: one line, and the TLS hint only
where it may be the cause (a first contact), not for a connection lost later."""

from __future__ import annotations

import pytest
import redis
from balancer.common.connection import Unreachable

from balancer.client import talking

CLOSED = redis.ConnectionError("Connection closed by server.")


def _lost(client: redis.Redis) -> str:
    with pytest.raises(Unreachable) as raised, talking(client):
        raise CLOSED
    return str(raised.value)


def test_a_connection_lost_after_redis_answered_is_no_hint_at_tls() -> None:
    client = redis.Redis(port=6399)
    first = _lost(client)  # never answered: a TLS port is one likely cause
    assert "cannot reach Redis at redis://localhost:6399/0" in first
    assert "use a rediss:// URL" in first
    with talking(client):
        pass  # it answered once
    assert "rediss" not in _lost(client)  # a restart or a failover, now
