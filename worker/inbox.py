"""The worker's inbox in Redis, read by the worker's idle slots themselves.

One idle slot at a time holds the turn to fetch: a single BLMPOP both waits for work and
takes a batch, never more entries than slots are waiting, so leases the dispatcher
prefetched stay visible in Redis (and go back to their queue if the worker dies or stops)
until a slot is free to run them. The fetching slot keeps the first lease and runs it at
once (no hand-over to another thread on the way to the task); the others go to the slots
waiting beside it. When it leaves with work while others still wait, it wakes one of them
to fetch next.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any

import redis
from balancer.common import signals
from balancer.common.connection import Direct, MasterMoved
from balancer.common.keys import Keys
from balancer.common.retry import RETRYABLE, Backoff, describe
from balancer.common.scripts import Scripts
from balancer.common.signals import Lease

log = logging.getLogger("worker")

# Long blocks keep an idle worker quiet (each slot of a process pool fetches for itself);
# close() pushes SENTINEL to end one at once. The fetching connection waits this much
# longer than a block for its reply, whatever the client's socket timeout.
FETCH_BLOCK = 30.0
READ_MARGIN = 5.0
# After failed fetches, the slot holding the turn tries again after a backoff up to this
# (as common.retry.BACKOFF_MAX: soon after a failover).
FETCH_RETRY = 1.0
SENTINEL = b""
# How often a waiting slot looks whether the turn to fetch is free (it is also woken).
POLL = 0.2
# A fetch of one entry checks its lease against the worker's leases, all of them while it
# holds at most Scripts' TAKE_ONE_LEASES (else a sample, and one more command when the
# sample misses); past it, take.lua checks in Redis for the next SCRIPT_FETCHES blocking
# fetches, after which the leases are read again.
SCRIPT_FETCHES = 64


class _Turn:
    """Handed to a waiting slot: the turn to fetch is free."""


TURN = _Turn()
NOT_SENT = object()  # send_before_fetch sent nothing


class Inbox:
    def __init__(self, worker_id: str, client: redis.Redis, keys: Keys,
                 on_take: Callable[[Lease], None], stopping: threading.Event,
                 fetchers: int = 1) -> None:
        self.worker_id = worker_id
        # How many connections may block on this worker's inbox at once: one per pool
        # child (each has an Inbox of its own), one for the slots of a thread pool.
        self.fetchers = max(1, fetchers)
        self.client = client
        self.key = keys.inbox(worker_id)
        self.blocked_on = self.key  # the list a blocked fetch waits on (close pushes there)
        self.fetched_key = keys.fetched(worker_id)
        self.scripts = Scripts(client, keys)
        self.on_take = on_take  # the worker now holds this lease
        self.stopping = stopping  # set: take no more work
        self._ready: queue.Queue[Lease | _Turn] = queue.Queue()
        self._turn = threading.Lock()
        self._lock = threading.Lock()
        self._waiting = 0  # slots inside next()
        self.block = FETCH_BLOCK
        # Used only by the slot holding the turn.
        self.direct = Direct(client, read_timeout=self.block + READ_MARGIN, route=self.key)
        self._backoff = Backoff(cap=FETCH_RETRY)
        self._unchecked = False  # a fetch failed: an entry may wait in fetched:<worker>
        self._waiting_entries = 0  # the inbox held this many more after the last fetch
        self._sent_ahead = False  # a fetch went with a command before it (send_before_fetch)
        self._script_fetches = 0  # blocking fetches left to check with take.lua

    def next(self) -> Lease | None:
        """The next lease for the calling slot, waiting for one; None once stopping."""
        with self._lock:
            self._waiting += 1
        try:
            while not self.stopping.is_set():
                try:
                    item = self._ready.get_nowait()
                except queue.Empty:
                    item = TURN
                if isinstance(item, Lease):
                    return item
                if self._turn.acquire(blocking=False):
                    try:
                        lease, handed = self._fetch()
                    finally:
                        self._turn.release()
                    if lease is not None:
                        self._wake_one(handed)
                        return lease
                    continue
                try:
                    item = self._ready.get(timeout=POLL)
                except queue.Empty:
                    continue
                if isinstance(item, Lease):
                    return item
            return None
        finally:
            with self._lock:
                self._waiting -= 1

    def _fetch(self) -> tuple[Lease | None, int]:
        """Wait for entries, taking one per waiting slot: (the caller's lease, how many
        were handed to the others).

        Only entries whose lease this worker holds are run: anyone who can push to the
        inbox could otherwise make it run what they wrote. One round trip does both: a
        BLMOVE waits for an entry and moves it to ``fetched:<worker>``, and take.lua, sent
        right behind it, checks it and takes more from the inbox, up to what the waiting
        slots can run (one entry is checked by plain commands: ``_fetch_commands``). An
        entry moved and not yet checked (a connection lost between the two) is taken by
        the next fetch before it blocks. While entries wait (the last take said how many
        it left), the script alone takes them: one command, no block."""
        with self._lock:
            wanted = max(1, self._waiting - self._ready.qsize())
        if self._sent_ahead:
            return self._fetched_ahead()
        try:
            if self._unchecked or self._waiting_entries:  # take what waits, no blocking
                entries, self._waiting_entries = self.scripts.take_counted(
                    self.worker_id, wanted, fetched=self._unchecked)
                self._unchecked = False
                if entries:
                    return self._hand(entries)
            entries = self._checked(self.direct.calls(*self._fetch_commands(wanted)), wanted)
        except RETRYABLE as exc:
            self._unchecked = True
            return self._failed(exc)
        self._succeeded()
        return self._hand(entries)

    def _fetch_commands(self, wanted: int) -> tuple[tuple[Any, ...], ...]:
        """The blocking fetch: BLMOVE, and the check right behind it. One entry is checked
        by plain commands (``Scripts.take_one_commands``: no script call on the way to
        the task) unless the last read found many leases; more entries, or after many
        leases, by take.lua, which also takes the entries beyond the first."""
        block = ("BLMOVE", self.key, self.fetched_key, "LEFT", "RIGHT", self.block)
        if wanted == 1 and not self._script_fetches:
            return (block, *self.scripts.take_one_commands(self.worker_id))
        self._script_fetches = max(0, self._script_fetches - 1)
        return (block, self.scripts.take_command(self.worker_id, wanted))

    def _checked(self, replies: list[Any], wanted: int) -> list[bytes]:
        """The entries of a blocking fetch's replies (error replies raise)."""
        moved, *check = replies
        if isinstance(moved, Exception):
            raise moved
        if len(check) > 1:  # plain commands
            entries, self._waiting_entries, many = self.scripts.taken_one(self.worker_id,
                                                                          check)
            if many:
                self._script_fetches = SCRIPT_FETCHES
            return entries
        reply = check[0]
        if isinstance(reply, redis.exceptions.NoScriptError):  # a new or restarted server
            entries, self._waiting_entries = self.scripts.take_counted(self.worker_id, wanted)
        elif isinstance(reply, Exception):
            raise reply
        else:
            entries, self._waiting_entries = self.scripts.taken(self.worker_id, reply)
        return entries

    def send_before_fetch(self, command: tuple[Any, ...]) -> Any:
        """Send ``command`` (a slot's acknowledgement) with this slot's next blocking fetch
        right behind it, in one round trip, and return its reply (an error reply as the
        exception object); the fetch's replies are read by the next ``next()``. An idle
        pool child saves a round trip per task: its ack, then its wait for the next.

        ``NOT_SENT``, with nothing sent, when the fetch cannot go now: another slot holds
        the turn, the last fetch failed (what it moved must be taken first), or entries
        wait (they are taken without blocking). A lost connection raises, as a fetch
        that failed."""
        if (self.stopping.is_set() or self._unchecked or self._waiting_entries
                or self._sent_ahead or not self._turn.acquire(blocking=False)):
            return NOT_SENT
        try:
            reply = self.direct.call_ahead(command, *self._fetch_commands(1))
            self._sent_ahead = True
            return reply
        except RETRYABLE:
            self._unchecked = True  # the fetch may have moved an entry
            raise
        finally:
            self._turn.release()

    def _fetched_ahead(self) -> tuple[Lease | None, int]:
        """Read the replies of the fetch sent with a command (``send_before_fetch``)."""
        self._sent_ahead = False
        try:
            entries = self._checked(self.direct.read_owed(), 1)
        except RETRYABLE as exc:
            self._unchecked = True
            return self._failed(exc)
        self._succeeded()
        return self._hand(entries)

    def settle_ahead(self) -> None:
        """Stopping: read a fetch sent ahead and not read yet (``close`` ends its wait), so
        that a lease it took goes to the slots' queue, from where it is handed back."""
        if self._sent_ahead and self._turn.acquire(timeout=POLL):
            try:
                if self._sent_ahead:
                    lease, _ = self._fetched_ahead()  # the others went to the queue
                    if lease is not None:
                        self._ready.put(lease)
            finally:
                self._turn.release()

    def _failed(self, exc: Exception) -> tuple[Lease | None, int]:
        """A fetch failed: said once per outage; the slot holding the turn waits out the
        backoff (so one slot retries), then lets the next fetch try. One cut off because
        the master moved (the pool said so) fetches again at once, from the new one."""
        if isinstance(exc, MasterMoved):
            return None, 0
        if self._backoff.failed():
            log.error("worker=%s cannot fetch: %s", self.worker_id, describe(exc))
        self.stopping.wait(self._backoff.delay)
        return None, 0

    def _succeeded(self) -> None:
        if self._backoff.recovered():
            log.info("worker=%s fetches again", self.worker_id)

    def _hand(self, entries: list[bytes], partition: int = 0) -> tuple[Lease | None, int]:
        """The first lease to the caller, the others to the waiting slots."""
        leases = self._taken(entries, partition)
        for lease in leases[1:]:
            self._ready.put(lease)
        return (leases[0] if leases else None), len(leases) - 1

    def _wake_one(self, handed: int) -> None:
        """Leaving with a lease: if slots still wait with nothing handed to them, one of
        them must take the turn now, not at its next look."""
        with self._lock:
            idle = self._waiting - 1 - handed
        if idle > 0:
            self._ready.put(TURN)

    def _taken(self, entries: list[bytes], partition: int = 0) -> list[Lease]:
        leases = []
        for raw in entries:
            if raw == SENTINEL:
                continue
            lease = signals.parse_lease(raw)
            if lease is None:
                log.error("worker=%s dropped unreadable inbox entry %r", self.worker_id,
                          raw[:80])
                continue
            if partition:
                lease = lease._replace(partition=partition)
            self.on_take(lease)
            leases.append(lease)
        return leases

    def deliver(self, entries: list[bytes], partition: int = 0) -> list[Lease]:
        """Hand entries a slot took from Redis itself (with its ack, from the inbox of
        ``partition``) to the slots; the leases they held."""
        leases = self._taken(entries, partition)
        for lease in leases:
            self._ready.put(lease)
        return leases

    def has_ready(self) -> bool:
        """Whether taken leases wait for a slot."""
        return any(isinstance(item, Lease) for item in list(self._ready.queue))

    def take_ready(self) -> list[Lease]:
        """Take back the leases taken and not started (to hand them back)."""
        taken: list[Lease] = []
        while True:
            try:
                item = self._ready.get_nowait()
            except queue.Empty:
                return taken
            if isinstance(item, Lease):
                taken.append(item)

    def close(self, timeout: float = 5.0) -> None:
        """Stop fetching (``stopping`` must be set): end a blocked fetch at once and wait
        for it, so that what the inbox holds from now on stays there.

        One SENTINEL per fetcher: Redis hands a pushed entry to the connection that has
        blocked longest, which may be another pool child's, not yet stopping (it fetches
        again). One entry per blocked connection reaches this one whatever the order;
        those left over are skipped by the next fetches, and go with the inbox."""
        try:
            self.client.lpush(self.blocked_on, *[SENTINEL] * self.fetchers)
        except RETRYABLE as exc:
            log.error("worker=%s cannot end its fetch: %s", self.worker_id, describe(exc))
        self._turn.acquire(timeout=timeout)  # kept: no slot fetches again
