"""A Sentinel master's connection pool that moves open connections when the master moves.

redis-py asks the sentinels for the master only when it makes a connection, and drops one
only when the master answers it READONLY. A manual failover (``SENTINEL FAILOVER``, how an
operator takes a master down for maintenance) promotes the replica and names it to every
client that asks, but leaves the old master a writable master for about ten more seconds
(Redis 7: until a sentinel reconfigures it): every connection still open to it goes on
writing there, and those writes are gone when it becomes a replica. Worse, a process
whose connections straddle the two (its blocking fetch on the old master, its reads on
the new) runs a task leased on one with its upstreams' results read from the other.

So the pool asks the sentinels again, at most every RECHECK seconds, when a connection is
handed out (``get_connection``, and ``Direct`` before each call): once they name another
master, the pool's idle connections are dropped (redis-py does it), a connection handed
back is dropped (redis-py's ``owns_connection``), each ``Direct`` drops its own before its
next call, and a ``Direct`` blocked in a long read (a worker's fetch) is cut off at once so
that it waits on the new master (its call raises ``connection.MasterMoved``). A process
with such a fetch (a worker, a process pool's child, serve) has a thread ask every RECHECK
even while nothing else uses Redis. A process moves within RECHECK of the sentinels' naming
of the new master, whether that failover is manual or a dead master's.
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

Address = tuple[str, int]


class Movable(Protocol):
    """A connection holder the pool cuts off when the master moves (``Direct``)."""

    def cut_off_unless(self, address: Address) -> None: ...


class MasterPool(SentinelConnectionPool):
    """redis-py's pool of connections to a Sentinel master, that asks the sentinels again
    at most every RECHECK seconds while it is used (module docstring)."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any) -> None:
        super().__init__(service_name, sentinel_manager, **kwargs)  # type: ignore[no-untyped-call]
        self._next_check = 0.0  # monotonic time of the next question to the sentinels
        self._known: Address | None = None  # the master this process last followed
        self._asking = threading.Lock()  # one thread asks; the others go on meanwhile
        self._pid = os.getpid()  # the process whose threads share the two locks
        self._holders: weakref.WeakSet[Any] = weakref.WeakSet()
        self._starting = threading.Lock()
        self._watcher = 0  # the pid of the process whose thread asks for blocked holders

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        self.master()
        return super().get_connection(*args, **kwargs)

    def follow(self, holder: Movable, blocking: bool) -> None:
        """Have ``holder`` cut off when the master moves. A ``blocking`` one (a fetch that
        waits for seconds) may be all a process does for a long while (a process pool's
        child waits on its inbox, and nothing else): the sentinels are then asked every
        RECHECK by a thread of the pool's own, so that it is cut off all the same."""
        self._holders.add(holder)
        if blocking and self._watcher != os.getpid():
            self._forked()
            with self._starting:
                if self._watcher != os.getpid():  # none yet, or one of the parent's
                    self._watcher = os.getpid()
                    threading.Thread(target=_watch, args=(weakref.ref(self),),
                                     name="sentinel-watch", daemon=True).start()

    def _forked(self) -> None:
        """In a child process, new locks: one held by another thread of the parent when it
        forked would stay held for good (no more asking, or a hang)."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._asking, self._starting = threading.Lock(), threading.Lock()

    def master(self) -> Address | None:
        """The master's address, as the sentinels named it at most RECHECK seconds ago
        (None before the first connection knew it). Sentinels that do not answer leave it
        as it was: the master may still answer, and its connections will say if not."""
        now = time.monotonic()
        if now < self._next_check:
            return self._known or self.master_address
        self._forked()
        if not self._asking.acquire(blocking=False):
            return self._known or self.master_address
        try:
            self._next_check = now + RECHECK
            try:
                address: Address = self.get_master_address()  # type: ignore[no-untyped-call]
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                return self._known or self.master_address
            if self._known is not None and address != self._known:
                log.warning("the sentinels name %s:%s the master of %s (was %s:%s):"
                            " connections move to it", *address, self.service_name,
                            *self._known)
                for holder in list(self._holders):
                    holder.cut_off_unless(address)
            self._known = address
            return address
        finally:
            self._asking.release()


def _watch(pool_ref: weakref.ref[MasterPool]) -> None:
    """Ask the sentinels every RECHECK while the pool lives (``MasterPool.follow``)."""
    while True:
        time.sleep(RECHECK)
        pool = pool_ref()
        if pool is None:
            return
        pool.master()
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
