"""The reply helpers: they pass through what a bytes client returns and name what else
came, so that a wrong assumption fails where the reply is read."""

from __future__ import annotations

import fakeredis
import pytest
from balancer.common import replies
from balancer.common.replies import UnexpectedReply


def test_replies_of_a_bytes_client_pass_through() -> None:
    client = fakeredis.FakeRedis()
    client.hset("h", mapping={"a": "1", "b": "2"})
    client.zadd("z", {"m": 1.5})
    client.rpush("l", "x", "y")
    assert replies.as_opt_bytes(client.hget("h", "a")) == b"1"
    assert replies.as_opt_bytes(client.hget("h", "nope")) is None
    assert replies.as_opt_bytes_list(client.hmget("h", ["a", "nope"])) == [b"1", None]
    assert replies.as_bytes_dict(client.hgetall("h")) == {b"a": b"1", b"b": b"2"}
    assert replies.as_scored(client.zrange("z", 0, -1, withscores=True)) == [(b"m", 1.5)]
    assert replies.as_bytes_list(client.lrange("l", 0, -1)) == [b"x", b"y"]
    assert sorted(replies.as_bytes_list(client.smembers("h:none") or set())) == []
    assert replies.as_int(client.hlen("h")) == 2


@pytest.mark.parametrize("call, reply", [
    (replies.as_bytes, "text"),  # a client made with decode_responses=True
    (replies.as_bytes, None),
    (replies.as_int, True),
    (replies.as_int, b"3"),
    (replies.as_list, b"x"),
    (replies.as_scored, [(b"m",)]),
    (replies.as_bytes_dict, [b"a", b"1"]),
])
def test_anything_else_is_named(call, reply) -> None:
    with pytest.raises(UnexpectedReply, match="from Redis, got"):
        call(reply)
    assert issubclass(UnexpectedReply, TypeError)  # bad data, to those who catch it


@pytest.mark.parametrize(("raw", "tags"), [
    (b"io,db", ("io", "db")), (b"", ()), (None, ()), (b"io,,db,", ("io", "db")),
    (b"\xff,io", ("\ufffd", "io")), (ValueError("WRONGTYPE"), ())])
def test_a_tasks_tags_field_reads_as_its_tags_in_order(raw: object, tags: tuple[str, ...]
                                                       ) -> None:
    assert replies.field_tags(raw) == tags  # type: ignore[arg-type]


@pytest.mark.parametrize(("raw", "at"), [
    (b"1700000000123", "2023-11-14T22:13:20.123000+00:00"), (None, None), (b"", None),
    (b"soon", None), (b"inf", None), (b"1e300", None)])
def test_a_time_field_reads_as_an_aware_utc_datetime_or_none(raw: bytes | None,
                                                            at: str | None) -> None:
    read = replies.field_utc(raw)
    assert (read.isoformat() if read else None) == at
