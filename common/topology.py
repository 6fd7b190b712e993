"""Redis behind Sentinel, and Redis Cluster: what their URLs name, and the client each becomes.

::

    redis+sentinel://[user:pass@]host:port[,host:port...]/SERVICE[/DB][?options]
    rediss+sentinel://...        TLS to the master and to the sentinels
    redis+cluster://[user:pass@]host:port[,host:port...][/0][?options]
    rediss+cluster://...         TLS to every node

The user and password are the data nodes' (the master's, the cluster's). The sentinels'
own ACL user and password, when they have one, are the options ``sentinel_username`` and
``sentinel_password``. Every other option is one a ``redis://`` URL takes (``ssl_*``,
``socket_timeout``...), read by redis-py's own URL parser, and applies to every connection.

A Sentinel client asks the sentinels for the master at each new connection, and again
every half second while it is used, and moves its open connections once they name another
(``common.sentinelpool``); a
Cluster client routes each command by its key's slot and follows MOVED replies. Our keys
all share one hash tag (``common.keys``), so every script, transaction and blocking read
of a namespace goes to the one master that holds its slot.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, cast
from urllib.parse import parse_qsl, unquote, urlencode

import redis
from balancer.common.sentinelpool import MasterPool
from redis.cluster import ClusterNode, RedisCluster
from redis.connection import parse_url
from redis.sentinel import Sentinel

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = SENTINEL_SCHEMES + CLUSTER_SCHEMES
SENTINEL_PORT = 26379
CLUSTER_PORT = 6379
# The sentinels' own credentials: query options, since the URL's user is the master's.
SENTINEL_OPTIONS = ("sentinel_username", "sentinel_password")
# How long asking one sentinel may take before the next is asked (a dead sentinel must
# not hold up finding the master); a sentinel URL's socket_* options override it.
SENTINEL_TIMEOUT = 1.0

# redis-py leaves these unannotated; said once here, typed.
_parse_url: Callable[[str], dict[str, Any]] = parse_url
_cluster_node: Callable[[str, int], ClusterNode] = ClusterNode


@dataclass(frozen=True)
class Topology:
    """A Sentinel or Cluster URL, read."""

    kind: Literal["sentinel", "cluster"]
    tls: bool
    nodes: tuple[tuple[str, int], ...]  # the sentinels, or the cluster's startup nodes
    service: str = ""  # the master's name, for Sentinel
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    # Connection options as redis-py reads them from a URL's query (typed).
    options: dict[str, Any] = field(default_factory=dict)


def scheme_of(url: str) -> str:
    return url.partition("://")[0].lower()


def is_topology(url: str) -> bool:
    """Whether ``url`` names Redis behind Sentinel or a Redis Cluster."""
    return scheme_of(url) in SCHEMES


def parse(url: str, shown: str) -> Topology:
    """Read a Sentinel or Cluster URL; ValueError naming what is wrong (``shown`` is the
    URL as it may be shown: redacted)."""
    scheme, _, rest = url.partition("://")
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"not a Sentinel or Cluster URL: {shown}")
    kind: Literal["sentinel", "cluster"] = "sentinel" if "sentinel" in scheme else "cluster"
    rest, _, query = rest.partition("?")
    userinfo, at, hostpath = rest.rpartition("@")
    if not at:
        hostpath = rest
    hosts, _, path = hostpath.partition("/")
    nodes = tuple(_node(h, SENTINEL_PORT if kind == "sentinel" else CLUSTER_PORT, shown)
                  for h in hosts.split(","))
    parts = [unquote(p) for p in path.split("/") if p]
    service, db = "", 0
    if kind == "sentinel":
        if not parts or len(parts) > 2:
            raise ValueError(f"a Sentinel URL names its master's service, and then perhaps"
                             f" a database: redis+sentinel://HOST:PORT[,HOST:PORT]/SERVICE"
                             f"[/DB], not {shown}")
        service = parts[0]
        db = _db(parts[1], shown) if len(parts) == 2 else 0
    else:
        if len(parts) > 1 or (parts and _db(parts[0], shown) != 0):
            raise ValueError(f"a Redis Cluster has database 0 only: {shown}")
    pairs = parse_qsl(query, keep_blank_values=True)
    extra = {k: v for k, v in pairs if k in SENTINEL_OPTIONS}
    if extra and kind == "cluster":
        raise ValueError(f"{', '.join(extra)} is an option of Sentinel URLs, not of {shown}")
    rest_query = urlencode([(k, v) for k, v in pairs if k not in SENTINEL_OPTIONS])
    tls = scheme.startswith("rediss")
    try:
        options = _parse_url(("rediss" if tls else "redis") + "://x/?" + rest_query)
    except ValueError as exc:
        raise ValueError(f"the Redis URL {shown}: {exc}") from None
    for own in ("host", "port", "db", "username", "password", "connection_class"):
        options.pop(own, None)
    username, password = _credentials(userinfo) if at else (None, None)
    return Topology(kind, tls, nodes, service, db, username=username, password=password,
                    sentinel_username=extra.get("sentinel_username") or None,
                    sentinel_password=extra.get("sentinel_password") or None,
                    options=options)


def _credentials(userinfo: str) -> tuple[str | None, str | None]:
    """(user, password) of ``user:password``; a userinfo without ":" is a user alone, as
    redis-py reads ``redis://user@host``."""
    user, _, password = userinfo.partition(":")
    return unquote(user) or None, unquote(password) or None


def _node(text: str, default_port: int, shown: str) -> tuple[str, int]:
    host, colon, port = text.strip().rpartition(":")
    if not colon:
        host, port = text.strip(), str(default_port)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # an IPv6 address
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is no HOST:PORT, in {shown}")
    return host, int(port)


def _db(text: str, shown: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database {text!r} is no number, in {shown}")
    return int(text)


def client(top: Topology, **kwargs: Any) -> redis.Redis:
    """A client of the master (Sentinel) or of the cluster, with ``kwargs`` for each
    connection to a data node.

    A RedisCluster is no ``redis.Redis``, but it answers every command this project
    sends (keyed commands, pipelines and transactions within one slot, blocking reads),
    so it is typed as one: the code that takes a client stays one code path."""
    conn: dict[str, Any] = {**top.options, **kwargs,
                            "username": top.username, "password": top.password}
    if top.tls:
        conn["ssl"] = True
    if top.kind == "sentinel":
        sentinel_kwargs = {k: v for k, v in top.options.items() if k.startswith("ssl")}
        sentinel_kwargs.update(
            socket_timeout=top.options.get("socket_timeout", SENTINEL_TIMEOUT),
            socket_connect_timeout=top.options.get("socket_connect_timeout",
                                                   SENTINEL_TIMEOUT),
            username=top.sentinel_username, password=top.sentinel_password)
        if top.tls:
            sentinel_kwargs["ssl"] = True
        sentinel = Sentinel(list(top.nodes), sentinel_kwargs=sentinel_kwargs)
        return cast(redis.Redis, sentinel.master_for(
            top.service, db=top.db, connection_pool_class=MasterPool, **conn))
    cluster = RedisCluster(startup_nodes=[_cluster_node(h, p) for h, p in top.nodes], **conn)
    return cast(redis.Redis, cluster)


def cluster_of(client: object) -> RedisCluster | None:
    """``client`` when it is a Redis Cluster client (typed as a ``redis.Redis``), else None."""
    return client if isinstance(client, RedisCluster) else None
