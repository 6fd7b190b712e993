"""Which keys hold another type than the schema gives them: named for the operator, as
Redis's WRONGTYPE does not."""

from __future__ import annotations

import re

import fakeredis
import redis
from balancer.common import keys as keys_module
from balancer.common import keytypes
from balancer.common.keys import Keys

# The schema table's type column, as TYPE names the type.
TABLE_TYPES = {"zset": "zset", "set": "set", "hash": "hash", "list": "list",
               "string": "string", "stream": "stream", "counter": "string"}


def _table() -> dict[str, str]:
    """key name -> type, from the table in common/keys.py's docstring."""
    rows = {}
    for line in (keys_module.__doc__ or "").splitlines():
        match = re.match(r"^\| (\S+)\s+\| (\w+)", line)
        if match and match.group(1) not in ("key",):
            rows[match.group(1)] = TABLE_TYPES[match.group(2)]
    return rows


def test_the_expected_types_are_those_of_the_schema_table() -> None:
    keys = Keys("ns")
    table = _table()
    for key, kind in keytypes.expected_types(keys, ["q1"]).items():
        name = key.removeprefix(keys.prefix).removeprefix("{ns}:").replace("q1", "<name>")
        assert table[name] == kind, key


def test_a_key_of_another_type_is_named_and_a_missing_one_is_fine() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("ns")
    client.sadd(keys.queues, "q1")
    client.set(keys.queue("q1"), "by hand")
    client.hset(keys.flows, "a", "b")
    client.zadd(keys.workers, {"w1": 1})  # the right type
    wrong = keytypes.wrong_types(client, keys)
    assert {(w.key, w.found, w.expected) for w in wrong} == {
        (keys.queue("q1"), "string", "zset"), (keys.flows, "hash", "zset")}


def test_a_wrongtype_refusal_is_explained_with_its_keys_and_others_as_said() -> None:
    client = fakeredis.FakeRedis()
    keys = Keys("ns")
    client.set(keys.dlq, "by hand")
    refusal = redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")
    assert keytypes.explain(client, keys, refusal) == (
        f"WRONGTYPE: {keys.dlq} holds a string, not a zset (written by something else? fix"
        f" or delete it: redis-cli DEL {keys.dlq})")
    other = redis.ResponseError("NOPERM this user has no permissions\n to run it")
    assert keytypes.explain(client, keys, other) == "NOPERM this user has no permissions to run it"
