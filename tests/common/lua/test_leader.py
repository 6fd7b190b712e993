"""leader.lua: the leader lease, its token and the epoch it counts."""

from __future__ import annotations

import pytest
import redis
from balancer.common.keys import Keys
from balancer.common.scripts import Scripts

from tests.common.lua.db import TTL


def test_leader_lease_is_exclusive_and_renewable(client: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    scripts = Scripts(client, keys)
    first = scripts.leader("d1", TTL)
    assert first == "1|d1"
    assert scripts.leader("d2", TTL) is None
    assert scripts.leader("d1", TTL) == first
    assert 0 < client.pttl(keys.leader) <= TTL
    client.delete(keys.leader)  # the lease expired
    assert scripts.leader("d2", TTL) == "2|d2"
    assert scripts.leader("d1", TTL) is None


@pytest.mark.parametrize("bad", ["not-a-number", "1.5", b"\xff", ["a", "list"]])
def test_an_epoch_that_is_no_counter_is_replaced_from_the_clock_and_told(
        client: redis.Redis, namespace: str, bad: object) -> None:
    keys = Keys(namespace)
    scripts = Scripts(client, keys)
    if isinstance(bad, list):
        client.rpush(keys.epoch, *bad)
    else:
        client.set(keys.epoch, bad)  # type: ignore[arg-type]
    lead = scripts.lead("d1", TTL)
    assert lead.token is not None
    epoch = int(lead.token.split("|")[0])
    seconds, _ = client.time()
    assert epoch >= seconds * 1000  # above any count of leaders
    assert lead.bad_epoch == (b"a list" if isinstance(bad, list)
                              else bad if isinstance(bad, bytes) else str(bad).encode())
    assert client.get(keys.epoch) == str(epoch).encode()
    client.delete(keys.leader)
    assert scripts.lead("d2", TTL) == type(lead)(f"{epoch + 1}|d2")  # counts on from there


def test_a_dispatchers_key_of_another_type_does_not_keep_anyone_from_leading(
        client: redis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    scripts = Scripts(client, keys)
    client.set(keys.dispatchers, "written by hand")
    assert scripts.leader("d1", TTL) == "1|d1"
    assert scripts.leader("d1", TTL) == "1|d1"  # renewed
    assert scripts.leader("d2", TTL) is None
    assert client.get(keys.dispatchers) == b"written by hand"  # left for the operator
