"""Redis replies, narrowed to the types this project's clients return.

Every client here reads replies as bytes (``decode_responses`` is never set:
``common.connection``), but redis-py's annotations must allow for any client: a reply is
``bytes | str``, ``int | str | bytes | Any``, or just ``Any``. Rather than a cast or a
``type: ignore`` at each call, which would hide a wrong assumption until an
``AttributeError`` far away, a reply goes through one of these: each checks the reply at
run time and returns the narrow type, or raises ``UnexpectedReply`` naming what was
expected and what came.

``UnexpectedReply`` is a ``TypeError``: code that treats a malformed value as bad data
(``except (TypeError, ValueError)``) treats a malformed reply the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone


class UnexpectedReply(TypeError):
    """A Redis reply was not of the type the code relies on."""


def _fail(expected: str, reply: object) -> UnexpectedReply:
    shown = repr(reply)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return UnexpectedReply(f"expected {expected} from Redis, got {type(reply).__name__}"
                           f" {shown}")


def as_bytes(reply: object) -> bytes:
    """A bulk string reply that must be there (GET of a key known to exist, a member)."""
    if isinstance(reply, bytes):
        return reply
    raise _fail("bytes", reply)


def as_opt_bytes(reply: object) -> bytes | None:
    """A bulk string reply that may be nil (HGET, GET)."""
    return None if reply is None else as_bytes(reply)


def as_int(reply: object) -> int:
    """An integer reply (a count, HINCRBY, EXISTS)."""
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply
    raise _fail("an integer", reply)


def as_float(reply: object) -> float:
    """A score: redis-py turns a score reply into a float already."""
    if isinstance(reply, (int, float)) and not isinstance(reply, bool):
        return float(reply)
    raise _fail("a number", reply)


def as_list(reply: object) -> list[object]:
    """An array reply, its items still to be narrowed."""
    if isinstance(reply, (list, tuple)):
        return list(reply)
    raise _fail("an array", reply)


def as_bytes_list(reply: object) -> list[bytes]:
    """An array of bulk strings (LRANGE, SMEMBERS, ZRANGE, HKEYS); a set reply is listed
    in the order it came."""
    items = list(reply) if isinstance(reply, (set, frozenset)) else as_list(reply)
    return [as_bytes(item) for item in items]


def as_opt_bytes_list(reply: object) -> list[bytes | None]:
    """An array of bulk strings that may be nil (HMGET)."""
    return [as_opt_bytes(item) for item in as_list(reply)]


def as_scored(reply: object) -> list[tuple[bytes, float]]:
    """ZRANGE ... WITHSCORES: (member, score) pairs."""
    pairs = []
    for item in as_list(reply):
        if not isinstance(item, Sequence) or isinstance(item, (bytes, str)) or len(item) != 2:
            raise _fail("a (member, score) pair", item)
        pairs.append((as_bytes(item[0]), as_float(item[1])))
    return pairs


def as_bytes_dict(reply: object) -> dict[bytes, bytes]:
    """HGETALL: field -> value."""
    if not isinstance(reply, Mapping):
        raise _fail("a map", reply)
    return {as_bytes(k): as_bytes(v) for k, v in reply.items()}


# -- hash fields read leniently ----------------------------------------------------------
# Where a field that is missing or unreadable must not stop the reader (the dispatcher
# deciding a gate, a view of a run), it reads as its default instead of raising.


def opt_field_int(raw: bytes | None) -> int | None:
    """A numeric field (stored as an int or a float) as an int; None when it is absent,
    empty or not a number."""
    try:
        return int(float(raw)) if raw else None
    except (ValueError, OverflowError):  # not a number, or "inf" written by hand
        return None


def field_int(raw: bytes | None) -> int:
    """``opt_field_int``, 0 when there is no number."""
    return opt_field_int(raw) or 0


def field_utc(raw: bytes | None) -> datetime | None:
    """A field of Redis-clock milliseconds (``created``, ``scheduled``...) as an aware UTC
    datetime; None when it is absent, no number, or past what a datetime holds (written
    by hand)."""
    ms = opt_field_int(raw)
    try:
        return None if ms is None else datetime.fromtimestamp(ms / 1000, timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def field_tags(raw: bytes | None) -> tuple[str, ...]:
    """A task's ``tags`` field (comma-joined, as balancer/submit.py writes it) as its tags,
    in their order; none when it is absent or not a string (an error reply)."""
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else ""
    return tuple(t for t in text.split(",") if t)


def field_text(raw: bytes | None, default: str = "") -> str:
    """A text field (UTF-8), ``default`` when it is absent."""
    return raw.decode() if raw is not None else default
