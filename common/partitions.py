"""Partitions: how many a cluster has, which one a flow lives in, how many a dispatcher leads.

A namespace may be split into P partitions (``balancer serve --partitions P``), each its
own hash tag (``common.keys.Keys(namespace, p)``), so that Redis Cluster spreads them over
its masters, and its own leader lease, so that several dispatchers share them. P = 1, the
default, is the cluster as it was before partitions: one tag, ``{namespace}``.

Placement: a flow lives in one partition, chosen by its submitter, and its id says which
(``<id>-p<p>`` for p > 0, a plain id in partition 0). Anything that holds a flow id (a
``FlowRun``, ``balancer flow ID``, a cancel) finds the flow's keys without reading P or
searching. A ``@flow`` function's run is placed as a submitted flow is, its sub-runs in
its partition; a schedule's run lives in partition 0, and is found there.

The count is stored once, in partition 0 (``Keys.partitions``): serve sets it and refuses
to run with another; workers and clients read it with the protocol stamp
(common/clusterfacts.py), and cache it for ``clusterfacts.CACHE_FOR`` seconds.
A cached count is never larger than the stored one (a count only changes with a new
namespace), so a flow placed from it is always in a partition some dispatcher leads.
"""

from __future__ import annotations

import math
import zlib

import redis
from balancer.common import clusterfacts
from balancer.common.clusterfacts import PartitionsError as PartitionsError
from balancer.common.keys import Keys

_SUFFIX = "-p"


def flow_id_in(base_id: str, partition: int) -> str:
    """The id of a flow placed in ``partition``: the plain id in partition 0."""
    return base_id if partition == 0 else f"{base_id}{_SUFFIX}{partition}"


def of_flow(flow_id: str) -> int:
    """The partition a flow id names (0 for a plain id)."""
    base, sep, tail = flow_id.rpartition(_SUFFIX)
    if not sep or not base or not tail.isdigit() or tail.startswith("0"):
        return 0
    return int(tail)


def place(base_id: str, count: int) -> int:
    """The partition a new flow goes to: a hash of its id, so that flows spread evenly
    without any coordination between submitters."""
    if count <= 1:
        return 0
    return zlib.crc32(base_id.encode()) % count


def flow_keys(keys: Keys, flow_id: str) -> Keys:
    """The keys of the partition ``flow_id`` lives in."""
    return keys.of(of_flow(flow_id))


def home(worker_id: str, count: int) -> int:
    """A worker's home partition: where its doorbell list is."""
    return zlib.crc32(worker_id.encode()) % count if count > 1 else 0


def share(count: int, live: int) -> int:
    """How many partitions one dispatcher may lead while ``live`` dispatchers run: its
    fair share, rounded up so that together they lead every partition."""
    return math.ceil(count / max(1, live))


def to_resign(led: set[int], count: int, live: int) -> set[int]:
    """Which of the partitions a dispatcher leads it gives up: those past its share (the
    highest numbers), so that a dispatcher that joins finds some free."""
    extra = len(led) - share(count, live)
    return set(sorted(led)[len(led) - extra:]) if extra > 0 else set()


def may_take(led: set[int], count: int, live: int) -> bool:
    """Whether a dispatcher leading ``led`` may take one more free partition."""
    return len(led) < share(count, live)


def all_keys(keys: Keys, count: int) -> list[Keys]:
    return [keys.of(p) for p in range(count)]


def every(client: redis.Redis, keys: Keys) -> list[Keys]:
    """The keys of each partition of ``keys``' namespace, partition 0 first (``count``)."""
    return all_keys(keys, count(client, keys))


def stored(client: redis.Redis, keys: Keys) -> int | None:
    return clusterfacts.parse_count(keys.partitions, client.get(keys.partitions))


def claim(client: redis.Redis, keys: Keys, count: int) -> None:
    """Store ``count`` as the cluster's partition count, or refuse if another is stored."""
    if count < 1:
        raise PartitionsError(f"the partition count must be at least 1, got {count}")
    client.set(keys.partitions, count, nx=True)
    held = stored(client, keys)
    if held != count:
        raise PartitionsError(
            f"namespace {keys.namespace!r} has {held} partitions; this serve was asked for"
            f" {count}. Start it with --partitions {held} (BALANCER_PARTITIONS={held}):"
            " a namespace's partition count cannot change while it holds flows")


def count(client: redis.Redis, keys: Keys) -> int:
    """The cluster's partition count (1 when none is stored), cached for
    ``clusterfacts.CACHE_FOR``; once known, kept while partition 0 cannot answer."""
    return clusterfacts.read(client, keys).partitions
