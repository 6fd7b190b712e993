"""Open a Redis client from a URL; ``memory://`` names the embedded in-process broker.

TLS, client certificates and ACL users come with the URL, as redis-py reads it:
``rediss://user:password@host:6380/0?ssl_ca_certs=ca.pem&ssl_certfile=c.pem&ssl_keyfile=k.pem``.
Whatever is said about a URL here shows it redacted (``common.urls``).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Protocol, runtime_checkable

import redis
from balancer.common.urls import check, redact, remember, scrub
from hiredis import pack_command as _hiredis_pack  # a dependency: packs a command in C

log = logging.getLogger("balancer")


_embedded_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}

MEMORY_SCHEME = "memory://"

class BadRedisURL(ValueError):
    """A URL that cannot name a Redis (an unknown scheme, options redis-py cannot take).
    The message is one line that shows the URL redacted."""


class Unreachable(redis.ConnectionError):
    """Redis did not answer at a URL. The message is one line, safe to show: the URL
    redacted, the reason scrubbed of secrets, and a hint for the usual TLS mistakes.
    A redis-py ConnectionError, so code that caught those before still does."""


def connect(url: str) -> redis.Redis:
    """A client for ``url``. Every ``memory://NAME`` client of one process shares one server.

    Raises BadRedisURL, a ValueError (its message free of secrets), for a URL redis-py
    would misread, or whose scheme or options it cannot take: found here rather than at
    the first command, as a TypeError from deep inside redis-py."""
    if url.startswith(MEMORY_SCHEME):
        import fakeredis

        name = url[len(MEMORY_SCHEME):] or "default"
        with _embedded_lock:
            server = _embedded_servers.get(name)
            if server is None:
                server = _embedded_servers[name] = fakeredis.FakeServer()
        return fakeredis.FakeRedis(server=server)  # type: ignore[arg-type]
    remember(url)
    try:
        check(url)
        client = redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True)
    except ValueError as exc:
        raise BadRedisURL(scrub(str(exc))) from None
    pool = client.connection_pool
    try:
        pool.connection_class(**pool.connection_kwargs)  # connects lazily: nothing sent
    except (TypeError, redis.RedisError) as exc:
        raise BadRedisURL(f"the Redis URL {redact(url)} has an option redis-py cannot take:"
                         f" {scrub(str(exc))}") from None
    return client


def reach(url: str) -> redis.Redis:
    """A client for ``url`` that has answered a PING; Unreachable otherwise."""
    try:
        client = connect(url)
    except ValueError as exc:
        raise Unreachable(str(exc)) from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        raise Unreachable(explain(url, exc)) from None
    return client


def explain(url: str, exc: BaseException) -> str:
    """Why ``url`` cannot be reached, in one line that shows no secret."""
    reason = scrub(" ".join(str(exc).split())) or type(exc).__name__
    return f"cannot reach Redis at {redact(url)}: {reason}{_hint(url, reason)}"


def _hint(url: str, reason: str) -> str:
    tls = url.lower().startswith("rediss://")
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        if "ssl_ca_certs=" not in url:
            return (" (the server's certificate is not signed by a CA this client trusts:"
                    " give that CA with ?ssl_ca_certs=PATH)")
        return " (check that ssl_ca_certs names the CA that signed the server's certificate)"
    if tls and "ssl_certfile=" not in url and (
            "EOF occurred" in reason or "reset by peer" in reason
            or "certificate required" in reason or "Connection closed" in reason):
        return (" (the server may require a client certificate: give"
                " ?ssl_certfile=PATH&ssl_keyfile=PATH)")
    if not tls and ("reset by peer" in reason or "Connection closed" in reason):
        return " (if that port speaks TLS, use a rediss:// URL)"
    return ""



@runtime_checkable
class Wire(Protocol):
    """What this module uses of a redis-py connection. redis-py leaves these methods
    unannotated (``ConnectionInterface``), so strict typing needs them said once here."""

    socket_timeout: float | int | None

    def send_command(self, *args: Any) -> None: ...

    def read_response(self) -> Any: ...

    def disconnect(self) -> None: ...


    def send_packed_command(self, command: Any, check_health: bool = True) -> None: ...


class Direct:
    """A connection of one thread's own, for the calls on every task's path (a script, a
    worker's blocking fetch): the command goes straight down it, and the reply straight
    back. redis-py's general path (pool checkout, retry wrapper, instrumentation) costs
    2.5 times the CPU of the call itself (measured: 100 against 40 us per EVALSHA).

    One thread at a time may use it (a thread's own, or one passed under a lock). Errors
    are the caller's to handle, as with any call; a connection that failed is closed, and
    made again on the next call. ``send`` sends a write whose reply nobody waits for: the
    next call reads it first (a note whose loss the reader tolerates)."""

    def __init__(self, client: redis.Redis, read_timeout: float | None = None) -> None:
        self.client = client
        # Set for a connection that blocks (BLMPOP): it must wait longer than the block,
        # whatever the client's socket timeout (redis-py 8 sets 5 s by default).
        self.read_timeout = read_timeout
        self._conn: Wire | None = None
        self._unread = 0  # replies of sent notes, ahead of the next call's

    @staticmethod
    def _pack(*args: Any) -> list[bytes]:
        """A command as the bytes to send. Our arguments are str, bytes, int and float,
        which hiredis packs as redis-py's default encoder would (UTF-8), without redis-py's
        per-argument checks: 40 against 15 us for a submit's call here."""
        try:
            return [_hiredis_pack(args)]
        except TypeError as exc:  # as redis-py's packer says it (a bool, None, ...)
            raise redis.DataError(f"cannot send {args[0]!r}: {exc}") from None

    def _connection(self) -> Wire:
        if self._conn is None:
            conn = self.client.connection_pool.make_connection()
            if not isinstance(conn, Wire):  # redis-py types it as an untyped interface
                raise TypeError(f"a redis-py connection without {Wire.__name__}'s methods:"
                                f" {type(conn).__name__}")
            if self.read_timeout is not None:
                conn.socket_timeout = self.read_timeout  # applied when it connects
            self._conn = conn
        return self._conn

    def call(self, *args: Any) -> Any:
        conn = self._connection()
        try:
            conn.send_packed_command(self._pack(*args), check_health=False)
            self._read_notes(conn)
            return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._unread = 0
            conn.disconnect()
            raise

    def _read_notes(self, conn: Wire) -> None:
        """Read the replies of the notes sent before this call's command."""
        while self._unread:
            self._unread -= 1
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                log.error("a note to Redis was refused: %s", exc)

    def call_pair(self, first: tuple[Any, ...], second: tuple[Any, ...]) -> tuple[Any, Any]:
        """Two commands in one round trip: the server runs the second as soon as the first
        returns (a blocking one included). An error reply comes back as the exception
        object, in its place; lost connections raise."""
        conn = self._connection()
        try:
            conn.send_packed_command(self._pack(*first) + self._pack(*second),
                                     check_health=False)
            self._read_notes(conn)
            replies = []
            for _ in range(2):
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            return replies[0], replies[1]
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            self._unread = 0
            conn.disconnect()
            raise

    def send(self, *args: Any) -> None:
        """Send a write without waiting for its reply; a failure drops it (and is logged)."""
        conn = self._connection()
        try:
            conn.send_packed_command(self._pack(*args), check_health=False)
            self._unread += 1
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._unread = 0
            conn.disconnect()
            log.warning("a note to Redis was lost: %s", exc)
