"""The inbox of a worker serving several partitions: one blocking read, whatever their count.

A worker has an inbox in every partition (in that partition's slot, where assign.lua
writes it with the task's lease), and a blocking read cannot span slots. So the slot
holding the turn to fetch blocks on one list instead, the worker's doorbell in its home
partition (``partitions.home``): a dispatcher that leased into the worker's inbox of
partition p pushes ``p`` onto it, right after the lease (``Dispatcher._ring``). The slot
then takes from that partition's inbox with take.lua, which checks every entry's lease as
the single-partition fetch does, and goes on taking from it without blocking while it
finds work.

The note is a separate command from the lease: a dispatcher that dies between the two
leaves a lease nobody rang for. So every ``SWEEP`` seconds (and after a wait that ended
without a note), the fetch looks in every partition's inbox anyway: a lost note costs
that long at most. The look is one LLEN per partition, pipelined: one round trip per
master, each on a connection of its own (``connection.ByNode``), so that a master failing
over fails only the looks into its partitions, at once, instead of holding up the
others' until it is over. Then a take only from the inboxes that hold entries: an idle
worker sends, per SWEEP, one blocking read and that round trip. (It took from every inbox
before: 16 partitions cost 16 script calls per worker per 2 s, 80,000 a second for 10,000
idle workers: docs/scaling.md.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from balancer.common import partitions
from balancer.common.connection import ByNode, Direct
from balancer.common.keys import Keys
from balancer.common.replies import as_bytes_list, as_list
from balancer.common.retry import RETRYABLE, describe
from balancer.common.scripts import Scripts
from balancer.common.signals import Lease
from balancer.worker.inbox import NOT_SENT, READ_MARGIN, SENTINEL, Inbox, log

SWEEP = 2.0
NOTES = 64  # notes read at once


class DoorbellInbox(Inbox):
    """``Inbox`` over the worker's inboxes of ``count`` partitions: the same turn-taking
    among waiting slots; only the fetch differs."""

    def __init__(self, worker_id: str, client: redis.Redis, keys: Keys, count: int,
                 on_take: Callable[[Lease], None], stopping: threading.Event,
                 fetchers: int = 1) -> None:
        super().__init__(worker_id, client, keys, on_take, stopping, fetchers)
        self.count = count
        self.parts = [Scripts(client, keys.of(p)) for p in range(count)]
        self.bell = keys.of(partitions.home(worker_id, count)).doorbell(worker_id)
        self.blocked_on = self.bell
        self.block = SWEEP
        self.direct = Direct(client, read_timeout=SWEEP + READ_MARGIN, route=self.bell)
        self._inboxes = [scripts.keys.inbox(worker_id) for scripts in self.parts]
        self._looks = ByNode(client)  # the sweep's connections, one per master
        self._due = set(range(count))  # partitions whose inbox may hold entries
        self._failing: set[int] = set()  # partitions whose last take failed
        self._swept = time.monotonic()  # when the inboxes were last looked at

    def send_before_fetch(self, command: tuple[Any, ...]) -> Any:
        """Never: the fetch here is a sweep of several partitions' inboxes."""
        return NOT_SENT

    def _fetch(self) -> tuple[Lease | None, int]:
        """Take from a partition rung (or due for its sweep) while it has entries; when
        none has, wait for a note on the doorbell, up to SWEEP.

        A partition whose take fails (its master is failing over) stays due and is tried
        after the others: the others' work goes on being taken, and the doorbell's wait
        is cut to the backoff's delay so that the failing one is tried again soon."""
        with self._lock:
            wanted = max(1, self._waiting - self._ready.qsize())
        failure: Exception | None = None
        if time.monotonic() - self._swept >= SWEEP:
            failure = self._sweep()
        for p in sorted(self._due, key=lambda p: (p in self._failing, p)):
            try:
                entries, waiting = self.parts[p].take_counted(self.worker_id, wanted,
                                                              fetched=False)
            except RETRYABLE as exc:
                self._failing.add(p)
                failure = exc
                continue
            self._failing.discard(p)
            if not waiting:  # drained: no take again until a note or a sweep
                self._due.discard(p)
            if entries:
                return self._hand(entries, p)
        block = self.block
        if failure is not None:
            if self._backoff.failed():
                log.error("worker=%s cannot fetch from partitions %s: %s", self.worker_id,
                          ",".join(map(str, sorted(self._failing))) or "any",
                          describe(failure))
            block = self._backoff.delay
        try:
            reply = self.direct.call("BLMPOP", block, 1, self.bell, "LEFT", "COUNT", NOTES)
        except RETRYABLE as exc:
            self._swept = 0.0  # sweep once Redis answers again
            return self._failed(exc)
        if failure is None:
            self._succeeded()
        if not reply:
            self._swept = 0.0  # a quiet while: sweep at the next fetch
            return None, 0
        for note in as_bytes_list(as_list(reply)[1]):
            if note != SENTINEL and note.isdigit() and int(note) < self.count:
                self._due.add(int(note))
        return None, 0

    def _sweep(self) -> Exception | None:
        """Due: the partitions whose inbox holds entries, by one LLEN each, pipelined per
        master; and those whose master did not answer (their take is tried, after the
        others'). The first failure, if any."""
        replies = self._looks.calls([(key, ("LLEN", key)) for key in self._inboxes])
        self._due = {p for p, held in enumerate(replies) if held}
        self._swept = time.monotonic()
        return next((r for r in replies if isinstance(r, Exception)), None)
