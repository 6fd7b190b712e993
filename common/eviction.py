"""Whether Redis may delete this cluster's keys to make room, and what that would cost.

Under ``maxmemory``, every policy but ``noeviction`` has Redis delete keys when memory runs
short. An ``allkeys-*`` policy deletes any key: a queue, a worker's leases or inbox, a
task's record. Tasks then vanish without an error anywhere, and a flow waits for ever. A
``volatile-*`` policy deletes keys that have a time to live: here the records of finished
tasks and flows, so results go before ``BALANCER_RESULT_TTL``. With ``noeviction`` a write
past the limit is refused (OOM), which every path of ours retries (common/retry.py), and
nothing is lost. Managed Redis services often default to a ``volatile-*`` policy, and a
Redis shared with a cache to an ``allkeys-*`` one; Sidekiq and BullMQ warn about it the same
way. ``balancer serve`` logs the warning when it starts, and ``balancer status`` and the
dashboard show it.

The policy is read from ``INFO memory`` (a user without INFO, or a server that hides it:
unknown, never an error). Behind Redis Cluster, every master is read: the worst policy
counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis
from balancer.common.topology import cluster_of

SAFE = "noeviction"


@dataclass(frozen=True)
class Eviction:
    """A server's ``maxmemory-policy`` and ``maxmemory`` (bytes; 0: no limit)."""

    policy: str
    maxmemory: int

    @property
    def risk(self) -> str | None:
        """What the policy may delete of ours, or None when it deletes nothing."""
        if self.policy == SAFE:
            return None
        if self.policy.startswith("volatile"):  # volatile-lru, -lfu, -random, -ttl
            return ("deletes keys that have a time to live: results of finished tasks and"
                    " flows may go before BALANCER_RESULT_TTL")
        return ("deletes any key: queued tasks, leases and flow records may vanish without"
                " an error, and their flows wait for ever")

    @property
    def severity(self) -> int:
        """0: deletes nothing of ours; 1: keys with a time to live; 2: any key."""
        if self.risk is None:
            return 0
        return 1 if self.policy.startswith("volatile") else 2

    @property
    def warning(self) -> str | None:
        """One line for an operator, or None when the policy is safe."""
        if self.risk is None:
            return None
        limit = (f"maxmemory is {self.maxmemory} bytes" if self.maxmemory
                 else "once a maxmemory is set")
        return (f"Redis maxmemory-policy is {self.policy}: under memory pressure ({limit}) it"
                f" {self.risk}. Set it to noeviction (CONFIG SET maxmemory-policy noeviction,"
                " and in redis.conf), so that a full Redis refuses writes, which are retried,"
                " instead of deleting them")


def read_policy(client: redis.Redis) -> Eviction | None:
    """The server's policy (the worst of a cluster's masters), or None when it cannot be
    read (no INFO permission, a server or a stand-in without it, an outage)."""
    try:
        cluster = cluster_of(client)
        if cluster is not None:
            replies = cluster.info("memory", target_nodes=cluster.PRIMARIES)
            found = [_parse(reply) for reply in replies.values()]
        else:
            found = [_parse(client.info("memory"))]
    except (redis.RedisError, OSError):
        return None
    known = [e for e in found if e is not None]
    return max(known, key=lambda e: e.severity) if known else None


def _parse(info: Any) -> Eviction | None:
    if not isinstance(info, dict) or "maxmemory_policy" not in info:
        return None
    try:
        limit = int(info.get("maxmemory") or 0)
    except (TypeError, ValueError):
        limit = 0
    return Eviction(str(info["maxmemory_policy"]), limit)
