"""Tag limits as operators set them (admin.configure_tag, set_tag_limit, tag_limits) and
as the dispatcher and `balancer status` read them back, on fakeredis."""

from __future__ import annotations

import pytest
import redis
from balancer.common import signals
from balancer.common.keys import Keys

from balancer import TagLimit, admin, set_tag_limit, tag_limits
from balancer.taglimits import parse_counts, parse_limits


def test_a_limit_is_set_replaced_and_removed_and_the_dispatcher_told(
        fake: redis.Redis) -> None:
    keys = Keys("ns")
    set_tag_limit("db", 2, fake, namespace="ns")
    set_tag_limit("gpu", 1, fake, namespace="ns")
    set_tag_limit("db", 3, fake, namespace="ns")
    assert tag_limits(fake, namespace="ns") == [TagLimit("db", 3), TagLimit("gpu", 1)]
    assert fake.lrange(keys.wake, 0, -1) == [signals.QUEUES.encode()] * 3
    fake.hset(keys.tag_inflight, mapping={"gpu": 1, "old": 2})
    set_tag_limit("gpu", None, fake, namespace="ns")
    # A removed limit's leases stay counted until they end: they give their places back.
    assert tag_limits(fake, namespace="ns") == [TagLimit("db", 3), TagLimit("gpu", None, 1),
                                                TagLimit("old", None, 2)]


@pytest.mark.parametrize(("tag", "limit"), [
    ("", 1), ("a,b", 1), ("db", 0), ("db", -1), ("db", True), ("db", 1.5), ("db", "2"),
])
def test_a_tag_or_limit_the_cluster_cannot_take_is_refused_before_anything_is_written(
        fake: redis.Redis, tag: str, limit: object) -> None:
    keys = Keys("ns")
    with pytest.raises(admin.AdminError):
        admin.configure_tag(fake, keys, tag, limit)  # type: ignore[arg-type]
    assert not fake.exists(keys.tag_limits) and not fake.exists(keys.wake)


def test_limits_written_by_hand_that_are_no_positive_integer_read_as_no_limit() -> None:
    limits, problems = parse_limits({b"db": b"2", b"bad": b"x", b"zero": b"0", b"\xff": b"1"})
    assert limits == {"db": 2}
    assert len(problems) == 3
    assert parse_counts({b"db": b"1", b"bad": b"x"}) == {"db": 1}
