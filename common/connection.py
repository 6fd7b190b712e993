"""Open a Redis client from a URL; ``memory://`` names the embedded in-process broker.

TLS, client certificates and ACL users come with the URL, as redis-py reads it:
``rediss://user:password@host:6380/0?ssl_ca_certs=ca.pem&ssl_certfile=c.pem&ssl_keyfile=k.pem``.
``redis+sentinel://`` and ``redis+cluster://`` URLs (``common.topology``) give a client that
follows failovers. Whatever is said about a URL here shows it redacted (``common.urls``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, ParamSpec, Protocol, TypeVar, runtime_checkable

import redis
from balancer.common import demoted, serverversion, topology
from balancer.common.retry import is_outage, wait_out
from balancer.common.sentinelpool import MasterPool, cut_off
from balancer.common.urls import check, redact, remember, scrub
from hiredis import pack_command as _hiredis_pack  # a dependency: packs a command in C
from redis.crc import key_slot
from redis.exceptions import RedisClusterException

log = logging.getLogger("balancer")


_embedded_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}

MEMORY_SCHEME = "memory://"

P = ParamSpec("P")
R = TypeVar("R")


class BadRedisURL(ValueError):
    """A URL that cannot name a Redis (an unknown scheme, options redis-py cannot take).
    The message is one line that shows the URL redacted."""


class SlotMoved(redis.ConnectionError):
    """A Redis Cluster answered that the command's slot is served elsewhere, or is moving
    (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY): it refused the command before running
    it. A lost connection to callers that cannot tell (several commands in one round trip
    may have run in part); a caller whose round trip is one script or one transaction
    knows nothing ran, and may send it again (balancer/submit.py)."""


class MasterMoved(redis.ConnectionError):
    """Behind Sentinel: a blocking call's connection to a master the sentinels no longer
    name was cut off (common.sentinelpool), so that the call is made again on the new one.
    A lost connection to callers, which already wait those out and retry."""


class Unreachable(redis.ConnectionError):
    """Redis did not answer at a URL. The message is one line, safe to show: the URL
    redacted, the reason scrubbed of secrets, and a hint for the usual TLS mistakes.
    A redis-py ConnectionError, so code that caught those before still does."""


# The connections a client's pool may have at once, unless the URL says
# (`?max_connections=N`): Redis's own default maxclients. redis-py 7 and 8 cap a pool at
# 100 by default, and a thread-pool worker of more slots than that, whose tasks wait on
# I/O between calls (a Variable read, their upstream results), had calls refused with
# MaxConnectionsError: tasks failed as if Redis were away (seen: 76 of 500 tasks on 250
# slots), while nothing was wrong.
POOL_CAP = 10_000


def connect(url: str) -> redis.Redis:
    """A client for ``url``. Every ``memory://NAME`` client of one process shares one server.

    Raises BadRedisURL, a ValueError (its message free of secrets), for a URL redis-py
    would misread, or whose scheme or options it cannot take: found here rather than at
    the first command, as a TypeError from deep inside redis-py."""
    if url.startswith(MEMORY_SCHEME):
        import fakeredis
        from balancer.common.memoryserver import new_server

        name = url[len(MEMORY_SCHEME):] or "default"
        with _embedded_lock:
            server = _embedded_servers.get(name)
            if server is None:
                server = _embedded_servers[name] = new_server()
        return fakeredis.FakeRedis(server=server)  # type: ignore[arg-type]
    remember(url)
    try:
        check(url)
        if topology.is_topology(url):
            return _connect_topology(url)
        client = redis.Redis.from_url(url, health_check_interval=30, socket_keepalive=True,
                                      retry=demoted.retry(), max_connections=POOL_CAP)
        demoted.leave_replicas(client)
        _check_options(client, url)
    except ValueError as exc:
        raise BadRedisURL(scrub(str(exc))) from None
    return client


def _check_options(client: redis.Redis, url: str) -> None:
    """Make one connection object of the client's pool (it connects lazily: nothing is
    sent), so that an option redis-py cannot take is a ValueError now, not a TypeError at
    the first command."""
    pool = client.connection_pool
    try:
        pool.connection_class(**pool.connection_kwargs)
    except (TypeError, redis.RedisError) as exc:
        raise ValueError(f"the Redis URL {redact(url)} has an option redis-py cannot take:"
                         f" {scrub(str(exc))}") from None


def _connect_topology(url: str) -> redis.Redis:
    """A Sentinel or Cluster client. A cluster client reads the cluster's slots as it is
    made: a cluster none of whose nodes answers raises redis.ConnectionError here."""
    try:
        top = topology.parse(url, redact(url))
    except ValueError as exc:
        raise ValueError(scrub(str(exc))) from None
    cap = {} if "max_connections" in top.options else {"max_connections": POOL_CAP}
    try:
        client = topology.client(top, health_check_interval=30, socket_keepalive=True, **cap)
    except TypeError as exc:
        raise ValueError(f"the Redis URL {redact(url)} has an option redis-py cannot take:"
                         f" {scrub(str(exc))}") from None
    except (RedisClusterException, redis.RedisError) as exc:
        raise redis.ConnectionError(scrub(" ".join(str(exc).split()))) from None
    if topology.cluster_of(client) is None:
        _check_options(client, url)
    return client


def server_time_ms(client: redis.Redis, route: str) -> float:
    """Redis's clock, in ms, read on the server that holds the key ``route``: on a Redis
    Cluster, the master of its slot, whose clock the scripts read (a plain TIME goes to
    any node, and a cluster pipeline refuses it)."""
    cluster = topology.cluster_of(client)
    if cluster is None:
        reply = client.time()
    else:
        node = cluster.nodes_manager.get_node_from_slot(key_slot(route.encode()))
        command: Callable[..., Any] = cluster.execute_command  # unannotated in redis-py
        reply = command("TIME", target_nodes=node)
    seconds, micros = reply
    return int(seconds) * 1000 + int(micros) / 1000


def reach(url: str, wait: logging.Logger | None = None) -> redis.Redis:
    """A client for ``url`` whose server has answered, and is recent enough
    (``serverversion``); Unreachable otherwise, or TooOld. With ``wait`` (the start of a
    long-lived process: a worker, a serve), a server that answers but cannot serve yet
    (loading its data after a restart, out of memory) is waited for, said once on that
    log (``retry.wait_out``), as such a process waits later on; one that does not answer
    at all still ends the start, in one line (a wrong URL must not look like a wait)."""
    reached: list[redis.Redis] = []
    try:
        if wait is None:
            return _reach(url)
        wait_out(lambda: reached.append(_reach(url)), wait, "Redis cannot serve yet",
                 f"Redis at {redact(url)} serves now",  # the error says where
                 passing=lambda exc: _not_ready(exc.__cause__))
        return reached[0]
    except Unreachable as exc:  # one line: without what redis-py raised under it
        raise Unreachable(str(exc)) from None


def _reach(url: str) -> redis.Redis:
    """``reach``'s one try; an Unreachable carries what Redis said as its cause."""
    try:
        client = connect(url)
    except ValueError as exc:
        raise Unreachable(str(exc)) from None
    except redis.RedisError as exc:
        raise Unreachable(explain(url, exc)) from exc
    try:
        serverversion.check(client)
    except serverversion.TooOld as exc:
        raise serverversion.TooOld(f"{exc} (at {redact(url)})") from None
    except (redis.RedisError, RedisClusterException, OSError) as exc:
        raise Unreachable(explain(url, exc)) from exc
    return client


def _not_ready(exc: BaseException | None) -> bool:
    """Redis answered, and said it cannot serve for now: loading its data (redis-py makes
    that a ConnectionError), or an outage reply (``retry.is_outage``)."""
    return isinstance(exc, redis.exceptions.BusyLoadingError) or (
        isinstance(exc, redis.ResponseError) and is_outage(exc))


def explain(url: str, exc: BaseException, first_contact: bool = True) -> str:
    """Why ``url`` cannot be reached, in one line that shows no secret; with a hint at
    the usual TLS mistakes on a ``first_contact`` (a connection lost later, to a Redis that
    answered before, is a restart or a failover, not a wrong scheme)."""
    reason = scrub(" ".join(str(exc).split())) or type(exc).__name__
    hint = _hint(url, reason) if first_contact else ""
    return f"cannot reach Redis at {redact(url)}: {reason}{hint}"


def _hint(url: str, reason: str) -> str:
    tls = url.lower().startswith("rediss")
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
    if url.lower().startswith("redis://") and (
            "reset by peer" in reason or "Connection closed" in reason):
        return " (if that port speaks TLS, use a rediss:// URL)"
    return ""



@runtime_checkable
class Wire(Protocol):
    """What this module uses of a redis-py connection. redis-py leaves these methods
    unannotated (``ConnectionInterface``), so strict typing needs them said once here."""

    socket_timeout: float | int | None
    host: str
    port: int

    def send_command(self, *args: Any) -> None: ...

    def read_response(self) -> Any: ...

    def connect(self) -> None: ...

    def disconnect(self) -> None: ...

    def can_read(self, timeout: float = 0) -> bool: ...

    def send_packed_command(self, command: Any, check_health: bool = True) -> None: ...


def _again_if_demoted(method: Callable[P, R]) -> Callable[P, R]:
    """A call answered by a server demoted to a replica (``demoted.Demoted``) is made
    once more, on a new connection: nothing ran there (a replica refuses a write before
    making it), and the new connection finds the new master behind the same name."""
    @functools.wraps(method)
    def again(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except demoted.Demoted:
            return method(*args, **kwargs)
    return again


def own_connection(pool: redis.ConnectionPool) -> Any:
    """A new connection of the pool's kind and settings (behind Sentinel, one that asks the
    sentinels for the master), which the pool does not count.

    Not ``pool.make_connection()``: that counts each connection made against the pool's
    ``max_connections`` (100 by default since redis-py 7) and only a connection given back
    to the pool is uncounted, which a Direct's never is. Every connection a Direct made
    again (each try to connect during a Redis outage, each after a failover or a lost
    connection) and each Direct of a thread or call that ended was counted for good: after
    100, the pool refused every new connection with MaxConnectionsError, a ConnectionError
    that callers wait out as Redis being away: the process stopped talking to Redis for
    good (seen: a 100-try outage, or 100 `with concurrency(...)` blocks on one client)."""
    return pool.connection_class(**pool.connection_kwargs)


class Direct:
    """A connection of one thread's own, for the calls on every task's path (a script, a
    worker's blocking fetch): the command goes straight down it, and the reply straight
    back. redis-py's general path (pool checkout, retry wrapper, instrumentation) costs
    2.5 times the CPU of the call itself (measured: 100 against 40 us per EVALSHA).

    One thread at a time may use it (a thread's own, or one passed under a lock). Errors
    are the caller's to handle, as with any call; a connection that failed is closed, and
    made again on the next call. ``send`` sends a write whose reply nobody waits for: the
    next call reads it first (a note whose loss the reader tolerates).

    Failovers: behind Sentinel, each new connection asks the sentinels for the master,
    a READONLY reply (the master was demoted) closes the connection as a lost one
    (redis-py's SentinelManagedConnection), and a connection to a server the sentinels no
    longer name is dropped before the next call, or cut off if it blocks (the pool's,
    common.sentinelpool). With a plain URL, a READONLY or UNBLOCKED reply closes it too,
    and the call is made once more (common.demoted: a failover behind one address). On a
    Redis Cluster the connection goes to the master of ``route``'s slot (every key of a
    namespace shares it); a lost connection or a reply saying the slot moved (MOVED, ASK,
    CLUSTERDOWN, TRYAGAIN, READONLY, UNBLOCKED) closes it, raises redis.ConnectionError,
    and has the slots read again before the next call."""

    def __init__(self, client: redis.Redis, read_timeout: float | None = None,
                 route: str | None = None) -> None:
        self.client = client
        # Set for a connection that blocks (BLMPOP): it must wait longer than the block,
        # whatever the client's socket timeout (redis-py 8 sets 5 s by default).
        self.read_timeout = read_timeout
        cluster = topology.cluster_of(client)
        if cluster is not None and route is None:
            raise ValueError("a Direct connection to a Redis Cluster needs a key to route by")
        self._cluster = cluster
        self._slot = key_slot(route.encode()) if route is not None else 0
        self._refresh = False  # read the cluster's slots again before connecting
        self._conn: Wire | None = None
        self._unread = 0  # replies of sent notes, ahead of the next call's
        self._owed = 0  # replies of commands sent ahead, for ``read_owed``
        self._used = 0.0  # when the connection was last used (monotonic)
        # Behind Sentinel: the pool that says where the master is now (common.sentinelpool).
        pool = client.connection_pool if cluster is None else None
        self._master = pool if isinstance(pool, MasterPool) else None
        self._cut_for: tuple[str, int] | None = None  # cut off by the pool: the new master
        if self._master is not None:
            self._master.follow(self, blocking=read_timeout is not None)

    def _pool(self) -> redis.ConnectionPool:
        if self._cluster is None:
            return self.client.connection_pool
        try:
            if self._refresh:
                self._cluster.nodes_manager.initialize()
                self._refresh = False
            node = self._cluster.nodes_manager.get_node_from_slot(self._slot)
            pool: redis.ConnectionPool = (
                self._cluster.get_redis_connection(node).connection_pool)
        except RedisClusterException as exc:  # no node answers, or the slot has no master
            self._refresh = True
            raise redis.ConnectionError(f"Redis Cluster: {exc}") from None
        return pool

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
        if self._conn is not None:
            now = time.monotonic()
            if not self._unread and not self._owed:
                if self._master is not None:
                    self._check_master(self._conn, self._master)
                if self._conn is not None and now - self._used > IDLE_CHECK:
                    self._check_idle(self._conn)
            self._used = now
        if self._conn is None:
            conn = own_connection(self._pool())
            if not isinstance(conn, Wire):  # redis-py types it as an untyped interface
                raise TypeError(f"a redis-py connection without {Wire.__name__}'s methods:"
                                f" {type(conn).__name__}")
            if self.read_timeout is not None:
                conn.socket_timeout = self.read_timeout  # applied when it connects
            wire: Wire = conn
            self._conn = wire
            try:
                # Connect here, as a pool's checkout does: a Sentinel connection asks the
                # sentinels for the master in connect() (sending a command would connect
                # it to the host in its arguments instead).
                wire.connect()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                self._lost(wire)
                raise
        return self._conn

    def _check_idle(self, conn: Wire) -> None:
        """A connection idle for a while may have been closed by its server meanwhile (a
        master that died or was demoted in a failover): readable with nothing asked of it,
        it is dropped before use, as redis-py's pool checks a connection it hands out, so
        that the call goes to the master as it is now instead of failing once."""
        try:
            stale = conn.can_read(timeout=0)
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            self._lost(conn)

    def _check_master(self, conn: Wire, pool: MasterPool) -> None:
        """Behind Sentinel: a connection to a server the sentinels no longer name the master
        is dropped before use (a manual failover leaves the old master writable for a
        while, and what is written there is lost)."""
        address = pool.master()
        if address is not None and (conn.host, conn.port) != address:
            self._lost(conn)

    def cut_off_unless(self, address: tuple[str, int]) -> None:
        """Called from another thread when the master moved to ``address``: a blocking
        connection to another server is shut down, so that a read waiting on it fails at
        once (as a lost connection) instead of waiting out its block on the old master.
        Others move before their next call (``_check_master``)."""
        conn = self._conn
        if (self.read_timeout is not None and conn is not None
                and (conn.host, conn.port) != address):
            self._cut_for = address
            cut_off(conn)

    def _failed(self, conn: Wire, exc: BaseException) -> NoReturn:
        """A call's connection failed: closed, and the error raised (MasterMoved when the
        pool cut it off because the master moved)."""
        moved = self._cut_for
        self._lost(conn)
        if moved is not None:
            raise MasterMoved(f"the sentinels name {moved[0]}:{moved[1]} the master now;"
                              f" this connection to the old one was cut off") from exc
        raise exc

    def _lost(self, conn: Wire) -> None:
        """Close a connection that failed; the next call makes a new one, connected anew
        (behind Sentinel or on a cluster: to the master as it is then)."""
        self._unread = self._owed = 0
        conn.disconnect()
        self._conn = None
        self._cut_for = None
        if self._cluster is not None:
            self._refresh = True

    def _moved(self, conn: Wire, exc: redis.ResponseError) -> None:
        """A cluster's reply that the slot is served elsewhere (or not right now): the
        connection is dropped and the slots read again; raised as a lost connection, which
        every caller already waits out and retries."""
        self._lost(conn)
        raise SlotMoved(f"Redis Cluster: {exc}") from None

    @_again_if_demoted
    def call(self, *args: Any) -> Any:
        self._owing_nothing()
        conn = self._connection()
        try:
            conn.send_packed_command(self._pack(*args), check_health=False)
            self._read_notes(conn)
            return conn.read_response()
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._failed(conn, exc)
        except redis.ResponseError as exc:
            if self._cluster is not None and slot_moved(exc):
                self._moved(conn, exc)
            raise

    @_again_if_demoted
    def calls(self, *commands: tuple[Any, ...]) -> list[Any]:
        """Several commands in one round trip. An error reply comes back as the exception
        object, in its place; a lost connection (or a cluster slot that moved) raises."""
        self._owing_nothing()
        conn = self._connection()
        try:
            # One buffer, one send: redis-py sends each item of a list with a sendall of
            # its own, a system call per command.
            conn.send_packed_command([b"".join(b for c in commands for b in self._pack(*c))],
                                     check_health=False)
            self._read_notes(conn)
            replies = [self._read(conn) for _ in commands]
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._failed(conn, exc)
        self._check_moved(conn, replies)
        return replies

    def _read_notes(self, conn: Wire) -> None:
        """Read the replies of the notes sent before this call's command."""
        while self._unread:
            self._unread -= 1
            try:
                conn.read_response()
            except redis.ResponseError as exc:
                log.error("a note to Redis was refused: %s", exc)

    @_again_if_demoted
    def call_ahead(self, first: tuple[Any, ...], *ahead: tuple[Any, ...]) -> Any:
        """``first`` and the commands ``ahead`` of the caller in one round trip: the reply
        to ``first`` (an error reply as the exception object); those of ``ahead`` are
        read by ``read_owed``, and nothing else may be sent before. A lost connection (or
        a cluster slot that moved) raises, and the replies owed are gone with it."""
        self._owing_nothing()
        conn = self._connection()
        try:
            conn.send_packed_command(
                [b"".join(b for c in (first, *ahead) for b in self._pack(*c))],
                check_health=False)
            self._owed = len(ahead)
            self._read_notes(conn)
            reply = self._read(conn)
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._failed(conn, exc)
        self._check_moved(conn, [reply])
        return reply

    def read_owed(self) -> list[Any]:
        """The replies of the commands sent ahead by ``call_ahead``, waiting for them (up to
        the read timeout: a blocking command's among them). Errors as ``calls``."""
        conn = self._conn
        if conn is None or not self._owed:
            raise redis.ConnectionError("no replies are owed on this connection")
        try:
            replies = [self._read(conn) for _ in range(self._owed)]
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            self._failed(conn, exc)
        self._owed = 0
        self._check_moved(conn, replies)
        return replies

    def _owing_nothing(self) -> None:
        if self._owed:  # a reply read now would be one of theirs
            raise RuntimeError("replies of commands sent ahead are owed on this connection:"
                               " read_owed first")

    @staticmethod
    def _read(conn: Wire) -> Any:
        """One reply; an error reply as the exception object."""
        try:
            return conn.read_response()
        except redis.ResponseError as exc:
            return exc

    def _check_moved(self, conn: Wire, replies: list[Any]) -> None:
        if self._cluster is not None:
            for reply in replies:
                if isinstance(reply, redis.ResponseError) and slot_moved(reply):
                    self._moved(conn, reply)

    @property
    def owed(self) -> bool:
        """Whether replies of commands sent ahead wait to be read."""
        return self._owed > 0

    def send(self, *args: Any) -> None:
        """Send a write without waiting for its reply; a failure drops it (and is logged)."""
        self._owing_nothing()
        try:
            conn = self._connection()
            conn.send_packed_command(self._pack(*args), check_health=False)
            self._unread += 1
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            if self._conn is not None:
                self._lost(self._conn)
            log.warning("a note to Redis was lost: %s", exc)

    def close(self) -> None:
        """Close the connection, if one is open (the next call makes a new one)."""
        if self._conn is not None:
            self._lost(self._conn)


class ByNode:
    """Commands on keys of many slots, one round trip per server: one ``Direct`` per
    master node of a Redis Cluster (one in all on a single server), so that a master
    failing over fails only the commands of its own slots, at once, while the others are
    answered; redis-py's cluster pipeline would instead wait the failover out for all of
    them (a worker's look into the inboxes of every partition, worker/doorbell.py).

    One thread at a time, as a Direct."""

    def __init__(self, client: redis.Redis, read_timeout: float | None = None) -> None:
        self.client = client
        self.read_timeout = read_timeout
        self._cluster = topology.cluster_of(client)
        self._directs: dict[str, Direct] = {}  # node name ("" on a single server) -> its own

    def _node(self, route: str) -> str:
        if self._cluster is None:
            return ""
        try:
            node = self._cluster.nodes_manager.get_node_from_slot(key_slot(route.encode()))
        except RedisClusterException:  # the slot has no master now: the Direct says so
            return f"no master for {route}"
        return str(node.name)

    def calls(self, commands: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Replies to (route key, command) pairs, in order. An error reply, or the failure
        of the connection to that command's server (or of its slot's move), comes back in
        its place as the exception: nothing raises."""
        groups: dict[str, list[int]] = {}
        for i, (route, _) in enumerate(commands):
            groups.setdefault(self._node(route), []).append(i)
        replies: list[Any] = [None] * len(commands)
        for name, at in groups.items():
            direct = self._directs.get(name)
            if direct is None:
                direct = self._directs[name] = Direct(self.client, self.read_timeout,
                                                      route=commands[at[0]][0])
            try:
                out = direct.calls(*(commands[i][1] for i in at))
            except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
                del self._directs[name]  # made anew, to the master of then, next time
                out = [exc] * len(at)
            for i, reply in zip(at, out):
                replies[i] = reply
        for name in set(self._directs) - set(groups):  # a node that serves none of them now
            self._directs.pop(name).close()
        return replies


# A connection unused for this long (seconds) is checked before use (Direct._check_idle).
IDLE_CHECK = 1.0
# Error replies of a Redis Cluster that mean: ask the cluster where the slot is now.
_MOVED_CODES = ("MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "UNBLOCKED")


def slot_moved(exc: BaseException) -> bool:
    """Whether ``exc`` is a Redis Cluster's answer that the slot is served elsewhere, or
    not right now (MOVED, ASK, TRYAGAIN, CLUSTERDOWN, READONLY, and the UNBLOCKED a master
    turned replica sends a blocked command): the command did not run."""
    if not isinstance(exc, redis.ResponseError):
        return False
    if isinstance(exc, (redis.exceptions.AskError, redis.exceptions.ClusterDownError,
                        redis.exceptions.TryAgainError, redis.exceptions.ReadOnlyError)):
        return True
    return str(exc).startswith(_MOVED_CODES)
