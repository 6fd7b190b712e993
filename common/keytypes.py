"""Which keys of a namespace hold another type than the key schema gives them.

Redis answers WRONGTYPE without naming the key, so a key written by hand (or by another
program sharing the namespace) shows as a traceback, or as a refused submit, that says
nothing of where to look. These name it: the key, the type it holds, the one it should.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import redis
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_list


@dataclass(frozen=True)
class WrongType:
    key: str
    found: str
    expected: str

    def __str__(self) -> str:
        return f"{self.key} holds a {self.found}, not a {self.expected}"


def expected_types(keys: Keys, queues: Iterable[str] = ()) -> dict[str, str]:
    """The key of each fixed name, and of each of ``queues``, with the type the schema
    table of common/keys.py gives it (as TYPE names them; a test holds the two together)."""
    types = {keys.flows: "zset", keys.queues: "set", keys.inflight: "hash",
             keys.tag_limits: "hash", keys.tag_inflight: "hash", keys.workers: "zset",
             keys.delayed: "zset", keys.deadlines: "zset", keys.cascade: "list",
             keys.gate: "zset", keys.dlq: "zset", keys.aside: "hash", keys.wake: "list",
             keys.events: "stream", keys.idle: "string", keys.leader: "string",
             keys.dispatchers: "zset", keys.epoch: "string", keys.schedules: "zset",
             keys.partitions: "string", keys.protocol: "string", keys.cache_index: "zset"}
    for name in queues:
        types.update({keys.queue(name): "zset", keys.queue_conf(name): "hash",
                      keys.offer(name): "string", keys.backlog(name): "string"})
    return types


def wrong_fixed_types(client: redis.Redis, keys: Keys) -> list[WrongType]:
    """The keys of ``keys``' fixed names (no queue's) whose type is not the schema's."""
    return _wrong(client, expected_types(keys))


def is_wrong_type(exc: BaseException) -> bool:
    return isinstance(exc, redis.ResponseError) and "WRONGTYPE" in str(exc)


def wrong_types(client: redis.Redis, keys: Keys, queues: Iterable[str] = ()
                ) -> list[WrongType]:
    """The keys of ``keys``' fixed names and of ``queues`` (default: the queues the
    namespace lists) whose type is not the schema's; a missing key is fine."""
    return _wrong(client, expected_types(keys, list(queues) or _listed_queues(client, keys)))


def _wrong(client: redis.Redis, expected: dict[str, str]) -> list[WrongType]:
    pipe = client.pipeline(transaction=False)
    for key in expected:
        pipe.type(key)
    found = [t.decode() if isinstance(t, bytes) else str(t) for t in pipe.execute()]
    return [WrongType(key, kind, want) for (key, want), kind in zip(expected.items(), found)
            if kind not in ("none", want)]


def _listed_queues(client: redis.Redis, keys: Keys) -> list[str]:
    try:
        members = as_bytes_list(client.smembers(keys.queues))
    except redis.ResponseError:  # the list itself is of the wrong type: reported as such
        return []
    return sorted(m.decode(errors="replace") for m in members)


def explain(client: redis.Redis, keys: Keys, exc: redis.ResponseError,
            queues: Iterable[str] = ()) -> str:
    """What Redis said in ``exc``, on one line; for a WRONGTYPE, which keys of the schema
    (its fixed names and ``queues``', default the listed queues') are of another type."""
    said = " ".join(str(exc).split())
    if not is_wrong_type(exc):
        return said
    try:
        wrong = wrong_types(client, keys, queues)
    except redis.RedisError:
        wrong = []
    if not wrong:
        return said
    return "WRONGTYPE: " + describe(wrong)


def describe(wrong: Sequence[WrongType]) -> str:
    """Keys of another type, and the command that fixes them, on one line."""
    return ("; ".join(map(str, wrong)) + " (written by something else? fix or delete it:"
            " redis-cli DEL " + " ".join(w.key for w in wrong) + ")")
