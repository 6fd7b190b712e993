"""What a client reads of its namespace before writing: the partition count and the
leading dispatcher's protocol stamp, in one read, cached; another protocol refuses."""

from __future__ import annotations

import pytest
import redis
from balancer.common import clusterfacts, protocol
from balancer.common.keys import Keys


def test_a_namespace_without_stamp_or_count_takes_writes_in_one_partition(
        fake: redis.Redis) -> None:
    assert clusterfacts.count_to_write(fake, Keys("fresh")) == 1
    assert clusterfacts.read(fake, Keys("fresh")) == clusterfacts.Facts(1, None)


def test_the_stamp_of_this_protocol_lets_a_client_write(fake: redis.Redis) -> None:
    keys = Keys("same")
    fake.mset({keys.protocol: protocol.stamp(), keys.partitions: 3})
    assert clusterfacts.count_to_write(fake, keys.of(2)) == 3
    assert clusterfacts.read(fake, keys).stamp == protocol.Stamp(protocol.VERSION,
                                                                 protocol.release())


@pytest.mark.parametrize("version", [protocol.VERSION - 1, protocol.VERSION + 1])
def test_a_client_refuses_to_write_to_a_dispatcher_of_another_protocol_naming_both(
        fake: redis.Redis, version: int) -> None:
    keys = Keys("other")
    fake.set(keys.protocol, f"{version}|7.0.0")
    with pytest.raises(protocol.ProtocolMismatch) as refused:
        clusterfacts.count_to_write(fake, keys)
    said = str(refused.value)
    assert f"namespace 'other' is led by a dispatcher of release 7.0.0 (protocol {version})" in said
    assert f"this client runs release {protocol.release()} (protocol {protocol.VERSION})" in said
    assert "Upgrading" in said


def test_a_refusal_is_judged_on_the_stamp_redis_holds_now(fake: redis.Redis) -> None:
    """The facts are cached for 30 s, but a refusal is not: once a dispatcher of this
    release leads, the next write goes through."""
    keys = Keys("mended")
    fake.set(keys.protocol, f"{protocol.VERSION + 1}|7.0.0")
    with pytest.raises(protocol.ProtocolMismatch):
        clusterfacts.count_to_write(fake, keys)
    fake.set(keys.protocol, protocol.stamp())
    assert clusterfacts.count_to_write(fake, keys) == 1


def test_a_stamp_that_cannot_be_read_refuses_nobody(fake: redis.Redis) -> None:
    keys = Keys("garbled")
    fake.set(keys.protocol, b"\xff|x")
    assert clusterfacts.count_to_write(fake, keys) == 1
    assert protocol.parse_stamp(b"2|") == protocol.Stamp(2, "unknown")
    assert protocol.parse_stamp(b"") is None


def test_the_facts_are_cached_per_client_and_namespace(fake: redis.Redis) -> None:
    keys = Keys("cached-facts")
    fake.set(keys.partitions, 2)
    assert clusterfacts.read(fake, keys).partitions == 2
    fake.set(keys.partitions, 4)
    assert clusterfacts.read(fake, keys).partitions == 2
    assert clusterfacts.read(fake, keys, fresh=True).partitions == 4
