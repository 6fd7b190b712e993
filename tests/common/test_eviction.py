"""What Redis's maxmemory policy may delete of ours, read from the server itself."""

from __future__ import annotations

import redis
from balancer.common.eviction import Eviction, read_policy


def test_only_noeviction_deletes_nothing_and_the_warning_names_what_each_policy_takes() -> None:
    assert Eviction("noeviction", 0).warning is None
    assert Eviction("noeviction", 0).severity == 0
    volatile = Eviction("volatile-lru", 1 << 30)
    assert volatile.severity == 1
    assert "results of finished tasks" in (volatile.warning or "")
    assert "maxmemory is 1073741824 bytes" in (volatile.warning or "")
    anything = Eviction("allkeys-lfu", 0)
    assert anything.severity == 2
    assert "queued tasks, leases and flow records may vanish" in (anything.warning or "")
    assert "once a maxmemory is set" in (anything.warning or "")
    assert "CONFIG SET maxmemory-policy noeviction" in (anything.warning or "")


def test_the_policy_is_read_from_the_server(real: redis.Redis) -> None:
    policy = real.config_get("maxmemory-policy")["maxmemory-policy"]
    seen = read_policy(real)
    assert seen is not None and seen.policy == policy


def test_a_server_that_does_not_say_reads_as_unknown_never_an_error(
        fake: redis.Redis) -> None:
    assert read_policy(fake) is None  # fakeredis has no INFO
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.5)
    assert read_policy(unreachable) is None
