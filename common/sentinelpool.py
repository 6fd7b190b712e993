"""A Sentinel master's connection pool that moves open connections when the master moves.

redis-py asks the sentinels for the master only when it makes a connection, and drops one
only when the master answers it READONLY. A manual failover (``SENTINEL FAILOVER``, how an
operator takes a master down for maintenance) promotes the replica and names it to every
client that asks, but leaves the old master a writable master for about ten more seconds
(Redis 7: until a sentinel reconfigures it): every connection still open to it goes on
writing there, and those writes are gone when it becomes a replica. Worse, a process
whose connections straddle the two (its blocking fetch on the old master, its reads on
the new) runs a task leased on one with its upstreams' results read from the other.

So the pool has the sentinels asked again, at most every RECHECK seconds while it is used
(``get_connection``, and ``Direct`` before each call), by a thread of its own: a sentinel
that does not answer (a host down, a firewall dropping packets) holds up that thread for
its timeout, never a call. Once they name another master, the pool's idle connections are
dropped (redis-py does it), a connection handed back is dropped (redis-py's
``owns_connection``), each ``Direct`` drops its own before its next call, and a ``Direct``
blocked in a long read (a worker's fetch) is cut off at once so that it waits on the new
master (its call raises ``connection.MasterMoved``). A process with such a fetch (a
worker, a process pool's child, serve) has them asked every RECHECK even while nothing
else uses Redis. A process moves within RECHECK (and a call) of the sentinels' naming of
the new master, whether that failover is manual or a dead master's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from typing import Any, Protocol

import redis
from redis.sentinel import SentinelConnectionPool

log = logging.getLogger("balancer")

# How often (seconds), at most, a busy process asks the sentinels which server is the
# master: one SENTINEL MASTERS, about 0.1 ms on loopback, when a connection is next used.
RECHECK = 0.5
# A use after a longer quiet (seconds) waits for the answer, up to ASK_WAIT: a client
# that submits once in a while must not send its first submit after a failover to the old
# master. A busy process's answer is never that old; sentinels that hang cost one call
# ASK_WAIT once every RECHECK.
STALE = 2 * RECHECK
ASK_WAIT = 0.2

Address = tuple[str, int]


class Movable(Protocol):
    """A connection holder the pool cuts off when the master moves (``Direct``)."""

    def cut_off_unless(self, address: Address) -> None: ...


class MasterPool(SentinelConnectionPool):
    """redis-py's pool of connections to a Sentinel master, whose process follows the
    master's moves while it uses the pool (module docstring)."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._next_check = 0.0  # monotonic time from which a use has the sentinels asked
        self._known: Address | None = None  # the master this process last followed
        self._holders: weakref.WeakSet[Any] = weakref.WeakSet()
        self._blocking = False  # a holder blocks in long reads: ask every RECHECK
        self._starting = threading.Lock()
        self._asker = 0  # the pid of the process whose thread asks the sentinels
        self._wake = threading.Event()  # set: the asker asks now
        self._answered = threading.Event()  # set by the asker after each question
        self._answered_at = 0.0  # monotonic time of the last answer (or failure to get one)

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.master()
        return super().get_connection(*args, **kwargs)

    def follow(self, holder: Movable, blocking: bool) -> None:
        """Have ``holder`` cut off when the master moves. A ``blocking`` one (a fetch that
        waits for seconds) may be all a process does for a long while (a process pool's
        child waits on its inbox, and nothing else): the sentinels are then asked every
        RECHECK, used or not, so that it is cut off all the same."""
        self._holders.add(holder)
        if blocking:
            self._blocking = True
            self._ask_soon()

    def master(self) -> Address | None:
        """The master's address as the sentinels last named it to this process (None
        before the first connection knew it); has them asked again, in the background,
        when the last question is RECHECK old, and waits up to ASK_WAIT for their answer
        after a quiet longer than STALE."""
        now = time.monotonic()
        if now >= self._next_check:
            self._next_check = now + RECHECK
            self._answered.clear()
            self._ask_soon()
            if now - self._answered_at > STALE:
                self._answered.wait(ASK_WAIT)
        return self._known or self.master_address

    def _ask_soon(self) -> None:
        if self._asker != os.getpid():  # no asker yet, or the parent's (forked)
            if self._asker:
                self._starting = threading.Lock()  # perhaps held by a thread at the fork
            with self._starting:
                if self._asker != os.getpid():
                    self._asker, self._wake = os.getpid(), threading.Event()
                    self._answered = threading.Event()
                    threading.Thread(target=_ask, args=(weakref.ref(self), self._wake),
                                     name="sentinel-ask", daemon=True).start()
        self._wake.set()

    def ask(self) -> None:
        """Ask the sentinels which server is the master (the asker thread's); when they
        name another, say so and cut off the blocked holders. Sentinels that do not answer
        leave everything as it was: the master may still answer, and its connections will
        say if not."""
        address: Address | None
        try:
            address = self.get_master_address()  # type: ignore[no-untyped-call]
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            address = None
        self._answered_at = time.monotonic()
        if address is not None:
            if self._known is not None and address != self._known:
                log.warning("the sentinels name %s:%s the master of %s (was %s:%s):"
                            " connections move to it", *address, self.service_name,
                            *self._known)
                for holder in list(self._holders):
                    holder.cut_off_unless(address)
            self._known = address
        self._answered.set()


def _ask(pool_ref: weakref.ref[MasterPool], wake: threading.Event) -> None:
    """The asker: asks when a use wakes it, and every RECHECK for a pool with blocked
    holders; ends with the pool."""
    while True:
        woken = wake.wait(RECHECK)
        pool = pool_ref()
        if pool is None:
            return
        if woken or pool._blocking:
            wake.clear()
            pool.ask()
        del pool


def cut_off(conn: Any) -> None:
    """Shut ``conn``'s socket down for reading and writing from any thread: a read blocked
    on it (or the next) fails at once as a lost connection, which its own thread then
    closes. Only the socket's own shutdown (an SSL socket's would unwrap it under the
    reading thread's feet); closing is left to the thread that uses it."""
    sock = getattr(conn, "_sock", None)
    if sock is None:
        return
    with contextlib.suppress(OSError):  # closed meanwhile
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
