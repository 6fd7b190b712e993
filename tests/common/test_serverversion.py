"""Redis older than 7.0 is refused when a process reaches it, by its version as HELLO
says it; a server that names no Redis version is let through."""

from __future__ import annotations

from typing import Any

import pytest
import redis
from balancer.common import serverversion


class Hello:
    """A client whose HELLO answers ``reply`` (or raises it)."""

    def __init__(self, reply: Any) -> None:
        self.reply = reply

    def execute_command(self, *args: Any) -> Any:
        assert args == ("HELLO",)
        if isinstance(self.reply, Exception):
            raise self.reply
        return self.reply


def _check(reply: Any) -> str | None:
    return serverversion.check(Hello(reply))  # type: ignore[arg-type]


def test_redis_before_7_0_is_refused_naming_its_version_and_what_is_missing() -> None:
    with pytest.raises(serverversion.TooOld, match=r"Redis 6\.2\.14 is too old: balancer"
                       r" needs Redis 7\.0 or later \(BLMPOP"):
        _check({b"server": b"redis", b"version": b"6.2.14", b"proto": 3})
    with pytest.raises(serverversion.TooOld, match=r"Redis older than 6\.0 is too old"):
        _check(redis.ResponseError("unknown command 'HELLO', with args beginning with: "))


def test_redis_7_and_later_and_other_servers_pass_in_either_protocol() -> None:
    assert _check({b"server": b"redis", b"version": b"7.0.15"}) == "7.0.15"
    assert _check([b"server", b"redis", b"version", b"7.4.1", b"proto", 2]) == "7.4.1"
    assert _check({"server": "valkey", "version": "8.0.1"}) == "8.0.1"
    assert _check({b"server": b"redis"}) is None  # no version said: let through


def test_another_refusal_is_raised_as_it_came(real: redis.Redis) -> None:
    with pytest.raises(redis.ResponseError, match="NOAUTH"):
        _check(redis.ResponseError("NOAUTH Authentication required."))
    assert serverversion.check(real) is not None  # the machine's server: recent enough
