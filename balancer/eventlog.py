"""Reading the ``events`` stream (common/events.py): the latest entries, or following it.

Shared by ``balancer events`` and the dashboard's metrics and live views. An entry that
is not of the schema (anyone who can write the stream can write one) is skipped and
logged once per reader, never an error for the reader.

A cluster of several partitions has a stream in each (each written by its partition's
scripts, in its slot). ``latest_all`` and ``Merged`` read them all and merge their events
by time. A blocking XREAD cannot span slots on a Redis Cluster, so ``Merged`` reads every
stream without blocking, in one pipeline (one round trip per master), and waits POLL_S
between reads that found nothing. With one partition both are ``latest`` and ``Reader``:
the same commands as before partitions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from balancer.common import events
from balancer.common.keys import Keys

log = logging.getLogger("balancer.events")

BLOCK_MS = 1000  # a follower wakes at least this often to check whether it should stop
READ_COUNT = 500
POLL_S = 0.25  # a merged reader's wait between reads that found nothing


@dataclass
class Reader:
    """Reads the stream from ``last`` on ("$": only what comes next, "0": all it holds)."""

    client: redis.Redis
    keys: Keys
    last: str = "$"
    skipped: int = 0  # entries not of the schema
    _warned: bool = field(default=False, repr=False)

    def _decode(self, entries: list[tuple[bytes, dict[bytes, bytes]]]) -> list[events.Event]:
        out: list[events.Event] = []
        for stream_id, fields in entries:
            try:
                out.extend(events.decode(stream_id, fields))
            except events.EventError as exc:
                self.skipped += 1
                if not self._warned:
                    self._warned = True
                    log.warning("skipped an events entry %r that is not an event: %s "
                                "(further ones are counted, not logged)", stream_id, exc)
        return out

    def start_at_latest(self) -> None:
        """Continue after the newest entry now in the stream (resolving "$" once, so that
        entries written between two reads are never missed)."""
        newest: Any = self.client.xrevrange(self.keys.events, count=1)
        self.last = newest[0][0].decode() if newest else "0-0"

    def read(self, block_ms: int | None = BLOCK_MS, count: int = READ_COUNT
             ) -> list[events.Event]:
        """The events after ``last`` (waiting up to ``block_ms`` for one; None: no wait)."""
        if self.last == "$":
            self.start_at_latest()
        reply: Any = self.client.xread({self.keys.events: self.last}, count=count,
                                       block=block_ms)
        if not reply:
            return []
        [(_, entries)] = reply
        if entries:
            self.last = entries[-1][0].decode()
        return self._decode(entries)

    def follow(self, stopped: Callable[[], bool] = lambda: False) -> Iterator[events.Event]:
        while not stopped():
            yield from self.read()


def latest(client: redis.Redis, keys: Keys, n: int) -> tuple[list[events.Event], str]:
    """The events of the last ``n`` entries, oldest first, and the id of the newest entry
    ("0-0" when the stream is empty), to follow from."""
    entries: Any = client.xrevrange(keys.events, count=n)
    reader = Reader(client, keys)
    found = reader._decode(list(reversed(entries)))
    return found, entries[0][0].decode() if entries else "0-0"


def _order(event: events.Event) -> tuple[int, int]:
    """Events of several streams in time order (a stream id is ``<ms>-<seq>``)."""
    _, _, seq = event.stream_id.partition("-")
    return event.at_ms, int(seq) if seq.isdigit() else 0


def latest_all(client: redis.Redis, keys: list[Keys], n: int
               ) -> tuple[list[events.Event], list[str]]:
    """``latest`` over every partition's stream (``keys``, one per partition): the events
    of the last ``n`` entries of them all, oldest first, and each stream's newest id."""
    if len(keys) == 1:
        found, newest = latest(client, keys[0], n)
        return found, [newest]
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.xrevrange(k.events, count=n)
    merged: list[tuple[tuple[int, int], list[events.Event]]] = []
    lasts = []
    for k, entries in zip(keys, pipe.execute()):
        reader = Reader(client, k)
        for entry in entries:
            decoded = reader._decode([entry])
            if decoded:
                merged.append((_order(decoded[0]), decoded))
        lasts.append(entries[0][0].decode() if entries else "0-0")
    merged.sort(key=lambda item: item[0])
    return [e for _, group in merged[-n:] for e in group], lasts


class Merged:
    """Follows the streams of every partition from the ids ``lasts`` (one per partition,
    as ``latest_all`` returns them; "$": only what comes next)."""

    def __init__(self, client: redis.Redis, keys: list[Keys], lasts: list[str] | None = None
                 ) -> None:
        self.client = client
        self.readers = [Reader(client, k, last)
                        for k, last in zip(keys, lasts or ["$"] * len(keys))]

    @property
    def skipped(self) -> int:
        return sum(r.skipped for r in self.readers)

    def read(self, block_ms: int | None = BLOCK_MS, count: int = READ_COUNT
             ) -> list[events.Event]:
        """The events after each stream's last, merged by time; when none, a wait of up
        to POLL_S (within ``block_ms``) before returning none."""
        if any(r.last == "$" for r in self.readers):
            pipe = self.client.pipeline(transaction=False)
            for r in self.readers:
                pipe.xrevrange(r.keys.events, count=1)
            for r, newest in zip(self.readers, pipe.execute()):
                if r.last == "$":
                    r.last = newest[0][0].decode() if newest else "0-0"
        pipe = self.client.pipeline(transaction=False)
        for r in self.readers:
            pipe.xread({r.keys.events: r.last}, count=count)
        found: list[events.Event] = []
        for r, reply in zip(self.readers, pipe.execute()):
            if reply:
                [(_, entries)] = reply
                if entries:
                    r.last = entries[-1][0].decode()
                    found.extend(r._decode(entries))
        if not found and block_ms:
            time.sleep(min(POLL_S, block_ms / 1000))
        return sorted(found, key=_order)

    def follow(self, stopped: Callable[[], bool] = lambda: False) -> Iterator[events.Event]:
        while not stopped():
            yield from self.read()


def follower(client: redis.Redis, keys: list[Keys], lasts: list[str]) -> Reader | Merged:
    """A reader of every partition's stream from ``lasts``: a plain ``Reader`` (one
    blocking XREAD per read) when the cluster has one partition."""
    if len(keys) == 1:
        return Reader(client, keys[0], lasts[0])
    return Merged(client, keys, lasts)
