"""Reading the ``events`` stream (common/events.py): the latest entries, or following it.

Shared by ``balancer events`` and the dashboard's metrics and live views. An entry that
is not of the schema (anyone who can write the stream can write one) is skipped and
logged once per reader, never an error for the reader.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import redis

from balancer.common import events
from balancer.common.keys import Keys

log = logging.getLogger("balancer.events")

BLOCK_MS = 1000  # a follower wakes at least this often to check whether it should stop
READ_COUNT = 500


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
