"""Open a Redis client from a URL; ``memory://`` names the embedded in-process broker."""

from __future__ import annotations

import logging
import threading
from typing import Any

import redis
from redis.connection import ConnectionInterface

log = logging.getLogger("balancer")

_embedded_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}

MEMORY_SCHEME = "memory://"

# Error replies that say Redis cannot serve right now, whatever the keys (out of memory,
# a read-only replica after a failover, loading its data, busy with a script, a failing
# disk, ...): the same call succeeds later. Any other error reply (WRONGTYPE, a script's
# runtime error, a value that is not a number) is about the data of a particular key.
OUTAGE_CODES = frozenset({"OOM", "READONLY", "LOADING", "BUSY", "NOSCRIPT", "MASTERDOWN",
                          "MISCONF", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN", "EXECABORT"})
_PIPELINE_PREFIX = " of pipeline caused error: "


def error_message(exc: Exception) -> str:
    """An error's message, without the command redis-py prefixes a pipeline's error with."""
    return str(exc).rpartition(_PIPELINE_PREFIX)[2]


def error_code(exc: redis.ResponseError) -> str:
    """The code of an error reply ("WRONGTYPE", "OOM", "ERR" ...). redis-py keeps it apart
    for the codes it maps to classes, and wraps the message of a pipeline's command."""
    return exc.status_code or error_message(exc).split(" ", 1)[0]


def is_outage(exc: BaseException) -> bool:
    """Redis cannot serve at all for now (unreachable, or an error reply of OUTAGE_CODES):
    wait and try again. False for errors about particular data, which retrying repeats."""
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        return True
    return isinstance(exc, redis.ResponseError) and error_code(exc) in OUTAGE_CODES


def connect(url: str) -> redis.Redis:
    """A client for ``url``. Every ``memory://NAME`` client of one process shares one server."""
    if url.startswith(MEMORY_SCHEME):
        import fakeredis

        name = url[len(MEMORY_SCHEME):] or "default"
        with _embedded_lock:
            server = _embedded_servers.get(name)
            if server is None:
                server = _embedded_servers[name] = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=server)  # type: ignore[arg-type]
    return redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True)


class Direct:
    """A connection of one thread's own, for the calls on every task's path (a script, a
    worker's blocking fetch): the command goes straight down it, and the reply straight
    back. redis-py's general path (pool checkout, retry wrapper, instrumentation) costs
    2.5 times the CPU of the call itself (measured: 100 against 40 us per EVALSHA).

    One thread at a time may use it (a thread's own, or one passed under a lock). Errors
    are the caller's to handle, as with any call; a connection that failed is closed, and
    made again on the next call. ``send`` sends a write whose reply nobody waits for: the
    next call reads it first (a note whose loss the reader tolerates)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._conn: ConnectionInterface | None = None
        self._unread = 0  # replies of sent notes, ahead of the next call's

    def _connection(self) -> ConnectionInterface:
        if self._conn is None:
            self._conn = self.client.connection_pool.make_connection()
        return self._conn

    def call(self, *args: Any) -> Any:
        conn = self._connection()
        try:
            conn.send_command(*args)
            while self._unread:
                self._unread -= 1
                try:
                    conn.read_response()
                except redis.ResponseError as exc:
                    log.error("a note to Redis was refused: %s", exc)
            return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._unread = 0
            conn.disconnect()
            raise

    def send(self, *args: Any) -> None:
        """Send a write without waiting for its reply; a failure drops it (and is logged)."""
        conn = self._connection()
        try:
            conn.send_command(*args)
            self._unread += 1
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._unread = 0
            conn.disconnect()
            log.warning("a note to Redis was lost: %s", exc)
