"""Cached task results as an operator sees them: listed, and deleted so that the next run
of their task runs again (`balancer cache ls` / `rm`).

Each partition's ``cache_index`` names the results stored there (worker/caching.py writes
it with the entry), when each expires and its label (what its key function returned: a
Prefect 1 target as rendered), so nothing here scans the keyspace: the least-privilege
roles have no SCAN, and on a large Redis a SCAN is slow. A result a worker stored before
the index existed is not listed; it ends at its ``cache_for``.

Deleting a result is Prefect 1's deleting a target's file: the task runs again at its
next call and stores a new one. ``refresh_cache=True`` on the task does the same from
code, one run at a time.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass

import redis

from balancer.common import cache
from balancer.common.keys import Keys
from balancer.common.replies import as_scored


@dataclass(frozen=True)
class CachedResult:
    """One cached result: its task's cache key (``cache_key=``, else the task's import
    path), the digest of what it stands for ("any": every input), its label (a target as
    rendered, a key function's key; "" for none), when it expires (Redis ms) and its size
    in bytes (0: already gone)."""

    key: str
    digest: str
    label: str
    expires_ms: int
    size: int
    member: bytes  # in the partition's cache_index
    partition: int = 0

    def matches(self, pattern: str) -> bool:
        """Whether the glob ``pattern`` matches its cache key or its label."""
        return fnmatch.fnmatchcase(self.key, pattern) or (
            bool(self.label) and fnmatch.fnmatchcase(self.label, pattern))

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "label": self.label, "digest": self.digest,
                "expires_ms": self.expires_ms, "size": self.size,
                "partition": self.partition}


def listed(client: redis.Redis, keys: Keys, now_ms: int) -> list[CachedResult]:
    """The partition's results not yet expired at ``now_ms``, soonest to expire first
    (a member someone else wrote, which is none, is left out). Two round trips."""
    found = []
    for member, score in as_scored(client.zrangebyscore(keys.cache_index, f"({now_ms}",
                                                        "+inf", withscores=True)):
        try:
            key, digest, label = cache.from_index(member)
        except ValueError:
            continue
        found.append((key, digest, label, int(score), member))
    pipe = client.pipeline(transaction=False)
    for key, digest, *_ in found:
        pipe.strlen(keys.cache(key, digest))
    sizes = pipe.execute() if found else []
    return [CachedResult(key, digest, label, expires, size if isinstance(size, int) else 0,
                         member, keys.partition)
            for (key, digest, label, expires, member), size in zip(found, sizes)]


def forget(client: redis.Redis, keys: Keys, results: Iterable[CachedResult]) -> int:
    """Delete ``results`` (of this partition) and their index members; how many results
    were still there. One round trip."""
    results = list(results)
    if not results:
        return 0
    pipe = client.pipeline(transaction=False)
    pipe.delete(*[keys.cache(r.key, r.digest) for r in results])
    pipe.zrem(keys.cache_index, *[r.member for r in results])
    deleted, _ = pipe.execute()
    return int(deleted)
