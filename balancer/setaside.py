"""The dispatcher's hand on ``common.aside``: it sets a bad entry aside and says so once.

A bad entry moved out of its key is gone from where the dispatcher meets it, so it is
logged once by nature. A condition that stays (a queue key of the wrong type, a setting
that is not a number) is met again at every read: ``noted`` remembers what is recorded,
so that it is written and logged once, and cleared once it is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from balancer.common import codec
from balancer.common.aside import Aside, shown
from balancer.common.scripts import Scripts

log = logging.getLogger("balancer.dispatcher")


class SetAside:
    def __init__(self, scripts: Scripts, now_ms: Callable[[], float]) -> None:
        self.scripts = scripts
        self.now_ms = now_ms
        self.noted: set[str] = set()  # ids of conditions recorded and not cleared

    def move(self, kind: str, key: str, source_type: Literal["zset", "set", "list"],
             member: bytes, detail: str, score: float | None = None, queue: str = "") -> bool:
        """Move ``member`` out of ``key`` into the records; False if it was gone already."""
        record = Aside(kind, key, detail, member, score, queue, self.now_ms())
        moved = self.scripts.set_aside(record.id, record.to_blob(), key, source_type, member)
        if moved:
            self._log(record)
        return moved

    def note(self, kind: str, key: str, detail: str, member: bytes = b"", queue: str = ""
             ) -> str:
        """Record a condition left in place, each time it is met (an operator may have
        dismissed it: it comes back while it lasts) but logged once; its entry id."""
        record = Aside(kind, key, detail, member, None, queue, self.now_ms())
        self.scripts.note_aside(record.id, record.to_blob())
        if record.id not in self.noted:
            self.noted.add(record.id)
            self._log(record)
        return record.id

    def clear(self, entry: str, why: str) -> None:
        """The condition ``entry`` is gone: drop its record (if we noted it)."""
        if entry in self.noted:
            self.scripts.clear_aside(entry)
            self.noted.discard(entry)
            log.info("set-aside entry=%s cleared: %s", entry, why)

    def adopt(self, raw: dict[bytes, bytes]) -> list[tuple[str, Aside]]:
        """A new leader takes over the records an earlier one wrote: the conditions among
        them are cleared when found gone, and not logged again. Returns them all."""
        found = []
        for field, blob in raw.items():
            try:
                found.append((field.decode(), Aside.from_blob(blob)))
            except (UnicodeDecodeError, codec.CodecError, TypeError, ValueError):
                continue  # listed as unreadable by `balancer dlq aside`; nothing to clear
        self.noted = {entry for entry, record in found if not record.member}
        if found:
            log.warning("%d entries are set aside (balancer dlq aside)", len(found))
        return found

    @staticmethod
    def _log(record: Aside) -> None:
        member = f' member="{shown(record.member)}"' if record.member else ""
        log.warning("set aside entry=%s kind=%s key=%s%s: %s (balancer dlq aside)",
                    record.id, record.kind, record.key, member, record.detail)
