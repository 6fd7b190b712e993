"""Least-privilege Redis ACL users for the three roles: worker, dispatcher, client.

Each role gets the commands its code sends and the keys of its namespace it touches,
nothing else: no FLUSHALL, KEYS, CONFIG or SCAN, no key of another namespace, no
channel. The commands a role's Lua scripts call are read from the scripts themselves
(``common/lua``, the prelude's helpers followed), so the rules follow the code; the
commands its Python code sends directly are listed below, by where they are sent.

Two rules of Redis 7 shape the key patterns. A script runs every command under the
calling user's permissions, so its commands must be the user's. And every key passed to
EVAL/EVALSHA needs read and write permission, whatever the script does with it: only
keys a role reads with plain commands can be read-only (``%R~``).

A least-privilege client may not take the dispatcher's standing offers (that writes the
offered worker's inbox and leases): its small submits go through the dispatcher, one
hop more (``balancer.submit`` learns that from the first refusal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache

from balancer.common import luasource
from balancer.common.keys import Keys

# What every connection sends: the database of the URL, health checks, scripts. (AUTH and
# HELLO need no permission. redis-py's CLIENT SETINFO, which Redis 7.0 does not know,
# is left out: a refusal is ignored by redis-py, and logged by ACL LOG on Redis 7.2+.)
CONNECTION = ("PING", "SELECT", "EVALSHA", "EVAL",
              # redis-py's cluster client (redis+cluster:// URLs) reads the slots and the
              # commands' key positions: read-only introspection, no key
              "CLUSTER|SLOTS", "CLUSTER|SHARDS", "COMMAND")


@dataclass(frozen=True)
class Role:
    name: str
    scripts: tuple[str, ...]  # the Lua scripts it runs (common/lua)
    commands: tuple[str, ...]  # what its Python code sends directly
    # Keys it reads and writes, and keys it only reads with plain commands: names of
    # ``Keys`` members (a key per id: every id), or ALL_KEYS.
    keys: tuple[str, ...]
    read_keys: tuple[str, ...] = ()


ALL_KEYS = "*"  # every key of the namespace


ROLES = {
    "worker": Role(
        "worker",
        scripts=("heartbeat", "ack", "take", "fail", "mark_running", "release", "name_run",
                 "slots_take", "loop"),
        commands=(
            "ZADD",  # light heartbeat
            "EXISTS", "RPUSH",  # claiming its id, deregistering
            # An idle slot's fetch, and the check of what it moved (worker/inbox.py: the
            # leases read, or take.lua)
            "BLMOVE", "LPOP", "SRANDMEMBER", "SISMEMBER", "LLEN",
            "BLMPOP",  # the cancel listener (worker/cancels.py)
            "LPUSH", "LRANGE", "SMEMBERS",  # hand-back, reconciler
            "HGET", "HMGET",  # a task's queue, upstream results
            "HSET", "HDEL", "DEL",  # pool children's notes, deregistering
            "MULTI", "EXEC",
            "WAIT",  # acknowledgements held by replicas (BALANCER_MIN_REPLICAS)
            "GET", "SET",  # cached results (cache_for: worker/caching.py)
            "ZREMRANGEBYSCORE",  # and their index's expired members
            "MGET",  # the partition count and the dispatcher's stamp (common/clusterfacts.py)
            "ZREM", "TIME",  # concurrency slots given back, renewed (balancer/concurrency.py)
            "HSETNX",  # a variable set unless it is (balancer/variables.py)
            "LTRIM", "PEXPIRE",  # a run's list of artifacts (balancer/artifacts.py)
        ),
        keys=("task", "flow", "queue", "worker", "workers", "inbox", "leases", "fetched", "ahead",
              "cancels", "inflight", "deadlines", "delayed", "cascade", "dlq", "wake", "idle",
              "gate",  # an ack puts a gated dependent (a map, a trigger) in the gate
              "tag_inflight",  # a lease that counted against a tag limit gives it back
              "events", "cache", "cache_index",
              "doorbell",  # where it waits for leases of several partitions
              "concurrency",  # a task's `with concurrency(...)` (balancer/concurrency.py)
              "variables",  # a task's Variable.get/set/unset (balancer/variables.py)
              "artifact", "artifacts"),  # a task's artifacts (balancer/artifacts.py)
        read_keys=("partitions", "protocol",  # read with one MGET (common/clusterfacts.py)
                   "leader",  # whether a dispatcher leads it (worker/leaderwatch.py)
                   "concurrency_limits", "concurrency_decay"),
    ),
    "dispatcher": Role(
        # Also the operators' user: `balancer status`, `flow`, `queue` and `dlq`.
        "dispatcher",
        scripts=("leader", "assign", "promote", "cascade", "reap", "fail", "cancel",
                 "queue_rm", "dlq_retry", "dlq_purge", "set_aside", "gate", "schedule_fire",
                 "schedule_put"),
        commands=(
            "BLMPOP", "LPOP", "RPUSH", "LRANGE",  # signals, cascades, queue settings
            "GET", "SET", "DEL",  # leader, idle, offers, backlogs, its stamp (protocol)
            "MGET",  # the partition count and the stamp (common/clusterfacts.py)
            "ZRANGE", "ZREVRANGE", "ZRANGEBYSCORE", "ZCARD", "ZSCORE", "ZRANK", "ZREM",
            "HGET", "HMGET", "HGETALL", "HVALS", "HKEYS", "HLEN", "HSET", "HDEL",
            "HSETNX",  # noting what it found wrong and left in place (balancer/setaside.py)
            "TYPE",  # which key broke a lease script (set-aside entries)
            "SMEMBERS", "SCARD", "SADD",
            "TIME", "MULTI", "EXEC",
            "XREAD", "XREVRANGE",  # `balancer events`, the dashboard
            "SRANDMEMBER",  # the dashboard: what a worker holds
            "HSTRLEN",  # result sizes (the dashboard), a map's results before it gathers them
            "STRLEN",  # cached results' sizes (`balancer cache ls`)
            "INFO",  # the maxmemory policy, which may delete tasks (common/eviction.py)
        ),
        keys=(ALL_KEYS,),
    ),
    "client": Role(
        "client",
        scripts=("submit_small", "flow_extend", "flow_release", "flow_close", "schedule_put",
                 "slots_take"),
        commands=(
            "MULTI", "EXEC", "HSET", "ZADD", "SADD", "ZREMRANGEBYRANK", "RPUSH",  # submit, @flow
            "BLMOVE", "HGET", "HMGET",  # waiting, results
            "LRANGE",  # the tasks a @flow function's run added (FlowRun.attach)
            "TIME", "ZSCORE", "ZRANK", "ZRANGE", "SMEMBERS", "HGETALL", "GET", "SCARD",  # why
            "WAIT",  # submits held by replicas (BALANCER_MIN_REPLICAS)
            "HDEL",  # removing a tag limit (balancer.set_tag_limit)
            "ZREM", "DEL",  # undoing a submit Redis refused halfway (a key of another type)
            "MGET",  # the partition count and the dispatcher's stamp (common/clusterfacts.py)
            "ZRANGEBYSCORE",  # slots held under concurrency limits (concurrency_limits())
            # Serving deployments (balancer/serving.py): a due time claimed, the runs
            # asked for taken, a run id checked unused, the beats listed
            "SET", "BLMPOP", "EXISTS", "LLEN",
            "HSETNX",  # a variable set unless it is (balancer/variables.py)
            "LTRIM", "PEXPIRE",  # a run's list of artifacts (balancer/artifacts.py)
            "BLPOP",  # a paused @flow function's wait for its resume (balancer/pausing.py)
        ),
        keys=("task", "flow", "flows", "queues", "queue", "queue_conf", "wake", "offer",
              "backlog",  # a small submit's script is passed it: wake the dispatcher?
              "gate",  # gated tasks ready at submit (a map over a list given in code)
              "delayed",  # the first tasks of a run submitted to start later
              "events", "schedule", "schedules",
              "tag_limits",  # set like a queue's settings: balancer.set_tag_limit
              "concurrency",  # a @flow function's `with concurrency(...)`
              "deployments", "deployment_runs", "deployment_due",  # serve, run_deployment
              "variables",  # Variable.get/set/unset (balancer/variables.py)
              "artifact", "artifacts"),  # a @flow function's artifacts (balancer/artifacts.py)
        read_keys=("workers", "leader", "inflight", "worker", "leases",
                   "tag_inflight", "partitions", "protocol", "concurrency_limits",
                   "concurrency_decay"),
    ),
}

_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")


@cache
def script_commands(name: str) -> frozenset[str]:
    """Every command script ``name`` may call: its own and its prelude helpers'."""
    return frozenset(c.upper() for c in _CALL.findall(luasource.source(name)))


def commands(role: Role) -> list[str]:
    """The commands ``role`` needs, sorted; subcommands as ``COMMAND|SUB``."""
    needed = set(CONNECTION) | set(role.commands)
    for script in role.scripts:
        needed |= script_commands(script)
    return sorted(needed)


_PARTITION_0_ONLY = ("partitions", "protocol", "concurrency", "concurrency_limits",
                     "concurrency_decay",
                     "deployments", "deployment_runs", "deployment_due", "variables",
                     "artifacts")


def _pattern(namespace: str, member: str, partition: int | str = 0) -> str:
    """The glob of the keys ``Keys`` names ``member``: its key, or its keys for every id
    (the namespace taken literally: its glob characters escaped), in partition 0 or, with
    ``partition`` "*", in every other (common/partitions.py)."""
    escaped = re.sub(r"([*?\[\]\\])", r"\\\1", namespace)
    keys = Keys.every_other_partition(escaped) if partition == "*" else Keys(escaped)
    if member == ALL_KEYS:
        return keys.prefix + "*"
    if isinstance(getattr(Keys, member), property):
        return str(getattr(keys, member))
    return str(getattr(keys, member)("*"))


def _patterns(namespace: str, members: tuple[str, ...]) -> list[str]:
    """Each member's glob in partition 0, then in the other partitions (but for the
    partition count and the protocol stamp, which only partition 0 holds)."""
    return ([_pattern(namespace, m) for m in members]
            + [_pattern(namespace, m, "*") for m in members if m not in _PARTITION_0_ONLY])


def rules(role: Role, namespace: str) -> list[str]:
    """The ACL rules of ``role`` for ``namespace``, every partition's keys. They leave
    passwords alone (so that running them again after an upgrade locks nobody out) and
    replace everything else."""
    out = ["on", "clearselectors", "resetkeys", "resetchannels", "-@all"]
    out += [f"~{p}" for p in _patterns(namespace, role.keys)]
    out += [f"%R~{p}" for p in _patterns(namespace, role.read_keys)]
    out += [f"+{c.lower()}" for c in commands(role)]
    return out


def user_name(role: Role, namespace: str) -> str:
    return f"{namespace}-{role.name}"


def setuser_lines(namespace: str, roles: list[str] | None = None) -> list[str]:
    """One ``ACL SETUSER`` command per role, ready for redis-cli."""
    return [" ".join(["ACL", "SETUSER", user_name(ROLES[r], namespace),
                      *rules(ROLES[r], namespace)])
            for r in roles or list(ROLES)]
