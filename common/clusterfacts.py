"""What every process reads of its namespace's stored facts, in one read, cached.

Two facts are stored in partition 0 and change rarely: the partition count
(common/partitions.py: set by ``balancer serve``) and the protocol stamp of the dispatcher
leading partition 0 (common/protocol.py: written when it takes the lead). Clients read
them before they write (placement, and the check that the cluster reads what they write),
workers to know what to serve: once per ``CACHE_FOR`` per client and namespace, with one
MGET, so that a submit after an idle spell pays one round trip for both.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import NamedTuple

import redis
from balancer.common import protocol
from balancer.common.keys import Keys
from balancer.common.replies import as_list, as_opt_bytes
from balancer.common.retry import RETRYABLE_ON_CLUSTER

CACHE_FOR = 30.0


class PartitionsError(RuntimeError):
    """The partition count asked for is not the cluster's, or the stored one is no count
    (raised as ``partitions.PartitionsError``)."""


class Facts(NamedTuple):
    partitions: int  # 1 when none is stored
    stamp: protocol.Stamp | None  # None: no dispatcher of a release that writes one led


def parse_count(key: str, reply: object) -> int | None:
    raw = as_opt_bytes(reply)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise PartitionsError(f"{key} holds {raw[:40]!r}, not a partition count") from None


def read_now(client: redis.Redis, keys: Keys) -> Facts:
    """The facts as Redis holds them now, uncached."""
    raw_count, raw_stamp = as_list(client.mget([keys.partitions, keys.protocol]))
    return Facts(parse_count(keys.partitions, raw_count) or 1,
                 protocol.parse_stamp(as_opt_bytes(raw_stamp)))


_cache: weakref.WeakKeyDictionary[redis.Redis, dict[str, tuple[Facts, float]]] = (
    weakref.WeakKeyDictionary())
_lock = threading.Lock()


def read(client: redis.Redis, keys: Keys, fresh: bool = False) -> Facts:
    """The facts, cached for CACHE_FOR (``fresh``: read now).

    Once known, facts read again while partition 0 cannot answer (its master failing
    over) are the ones known: counts never change while a namespace holds flows, so work
    in the other partitions need not wait for partition 0's master."""
    now = time.monotonic()
    known = _cache.get(client, {}).get(keys.namespace)  # a read: whole, under the GIL
    if known is not None and now - known[1] < CACHE_FOR and not fresh:
        return known[0]
    try:
        facts = read_now(client, keys)
    except RETRYABLE_ON_CLUSTER:
        if known is None:
            raise
        return known[0]
    with _lock:
        _cache.setdefault(client, {})[keys.namespace] = (facts, now)
    return facts


def count_to_write(client: redis.Redis, keys: Keys) -> int:
    """The partition count, for a client about to write records its cluster will read:
    ``protocol.ProtocolMismatch`` when the dispatcher leading it runs another protocol
    version (its workers would misread them)."""
    facts = read(client, keys)
    if facts.stamp is not None and protocol.other_release(facts.stamp.version):
        facts = read(client, keys, fresh=True)  # refused on what Redis holds now, not on
    protocol.check_cluster(facts.stamp, keys.namespace)  # what it held up to 30 s ago
    return facts.partitions
