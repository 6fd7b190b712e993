"""The Redis server's version, checked when a process first reaches it.

This code needs Redis 7.0 or later: the dispatcher and workers wait with BLMPOP (7.0), and
the scripts and fetches use BLMOVE, ZMSCORE, SMISMEMBER and LPOP with a count (6.2). On an
older server they would fail only at their first such command, deep in a loop, with
"unknown command" (which the dispatcher once read as a broken key). ``HELLO`` without
arguments tells the version in one round trip that also proves the server answers, needs
no ACL permission, and changes nothing on the connection. A server that names its version
otherwise (a Redis-compatible one) is let through.
"""

from __future__ import annotations

import re
from typing import Any

import redis
from balancer.common.topology import cluster_of

MINIMUM = (7, 0)
NEEDED_FOR = "BLMPOP; and BLMOVE, ZMSCORE, SMISMEMBER, LPOP with a count from 6.2"


class TooOld(Exception):
    """The server is older than ``MINIMUM``: the message names its version."""


def check(client: redis.Redis) -> str | None:
    """The server's version as it says it (None when it does not), after checking it is
    at least ``MINIMUM``. Raises TooOld, or the redis-py error of an unreachable server."""
    try:
        facts = _hello(client)
    except redis.ResponseError as exc:
        said = str(exc).lower()
        if "unknown command" in said and "hello" in said:  # HELLO came with Redis 6.0
            raise TooOld(_too_old("older than 6.0")) from None
        raise
    version = facts.get("version")
    if version is None:
        return None
    numbers = re.match(r"(\d+)\.(\d+)", version)
    if numbers and facts.get("server", "redis") == "redis" and (
            int(numbers[1]), int(numbers[2])) < MINIMUM:
        raise TooOld(_too_old(version))
    return version


def _too_old(version: str) -> str:
    wanted = ".".join(map(str, MINIMUM))
    return (f"Redis {version} is too old: balancer needs Redis {wanted} or later"
            f" ({NEEDED_FOR})")


def _hello(client: redis.Redis) -> dict[str, str]:
    """HELLO's reply as text (a map in RESP3, a flat list of pairs in RESP2)."""
    cluster = cluster_of(client)
    if cluster is not None:  # any node: a cluster's nodes run one version
        node = cluster.get_default_node()  # type: ignore[no-untyped-call]
        reply: Any = node.redis_connection.execute_command("HELLO")
    else:
        reply = client.execute_command("HELLO")  # type: ignore[no-untyped-call]
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2]))
    if not isinstance(reply, dict):
        return {}
    return {_text(k): _text(v) for k, v in reply.items() if isinstance(v, (bytes, str))}


def _text(value: bytes | str) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
