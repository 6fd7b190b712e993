"""Which cluster client code talks to: an explicit client, ``BALANCER_REDIS_URL``, or
the embedded in-process cluster when neither is given.

Settings and connections are resolved once per process and configuration, not per
submit: reading the whole environment and opening a connection cost more than a
one-task flow's submit itself.
"""

from __future__ import annotations

import os
import threading
import weakref
from dataclasses import fields
from types import TracebackType

import redis
from redis.sentinel import SentinelConnectionPool

from balancer.common.connection import BadRedisURL, Unreachable, connect, explain
from balancer.common.settings import ENV_PREFIX, Settings
from balancer.common.topology import cluster_of

_lock = threading.Lock()
_settings: dict[tuple[object, ...], Settings] = {}
_clients: dict[str, redis.Redis] = {}
_NAMES = tuple(ENV_PREFIX + f.name.upper() for f in fields(Settings))
# os.environ's own mapping, where its keys are bytes (POSIX): read directly, the settings'
# variables cost a dict lookup each, where os.environ.get costs an encoding and, for a
# variable not set, an exception (13 us per submit in all, against 1).
_RAW = getattr(os.environ, "_data", None)
_RAW_NAMES = tuple(os.fsencode(name) for name in _NAMES)
if not isinstance(_RAW, dict) or not isinstance(next(iter(_RAW), b""), bytes):
    _RAW = None


def settings(namespace: str | None = None) -> Settings:
    """The settings for this process's environment (validated in full the first time a
    given set of ``BALANCER_*`` values is seen)."""
    if _RAW is not None:
        key: tuple[object, ...] = (namespace, *map(_RAW.get, _RAW_NAMES))
    else:
        key = (namespace, *map(os.environ.get, _NAMES))
    found = _settings.get(key)
    if found is None:
        found = _settings[key] = Settings.from_env(namespace=namespace)
    return found


def resolve(
    client: redis.Redis | None = None, namespace: str | None = None
) -> tuple[redis.Redis, Settings]:
    config = settings(namespace)
    if client is not None:
        return client, config
    if config.redis_url:
        return shared(config.redis_url), config
    from balancer import embedded

    return embedded.client(config), config


def resolve_url(client: redis.Redis | None, redis_url: str | None,
                namespace: str | None) -> tuple[redis.Redis, Settings]:
    """As ``resolve``, with an explicit ``redis_url`` taking the place of
    ``BALANCER_REDIS_URL``."""
    if client is None and redis_url:
        return shared(redis_url), settings(namespace)
    return resolve(client, namespace)


def here(client: redis.Redis | None = None, redis_url: str | None = None,
         namespace: str | None = None) -> tuple[redis.Redis, Settings]:
    """The cluster of the code calling: as given; else, in a task, its worker's cluster;
    in a @flow function, its run's; else as a submit finds it (BALANCER_REDIS_URL, else
    the embedded cluster). For what any code may reach for (concurrency limits,
    variables)."""
    from balancer import building, runcontext

    if client is None and redis_url is None:
        facts = runcontext.current()
        if facts is not None and facts.client is not None:
            return facts.client, settings(namespace or facts.namespace)
        run = building.current_run()
        if run is not None:
            return run.client, run.settings
    return resolve_url(client, redis_url, namespace)


def shared(url: str) -> redis.Redis:
    """This process's client for ``url`` (one per URL). BadRedisURL, its message one line,
    for a URL that cannot name a Redis."""
    with _lock:
        found = _clients.get(url)
        if found is None:
            try:
                found = _clients[url] = connect(url)
            except BadRedisURL as exc:
                raise BadRedisURL(str(exc)) from None  # no frames of ours or redis-py's
            _urls[id(found)] = url
        return found


_urls: dict[int, str] = {}


class talking:  # lower case: it reads as a call, ``with talking(client):``
    """Around what client code asks of the cluster: a Redis that cannot be reached is
    ``Unreachable``, one line naming the URL (its password hidden), raised without the
    traceback from inside redis-py. A class, not a ``contextmanager`` generator: it is
    around every submit, and costs a third as much."""

    __slots__ = ("client",)

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is None:
            if self.client not in _answered:
                _answered.add(self.client)
        elif isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            raise Unreachable(explain(_url_of(self.client), exc,
                                      first_contact=self.client not in _answered)) from None


# Clients Redis has answered through ``talking``: a connection they lose later is a
# restart or a failover, not a wrong URL (no TLS hint then).
_answered: weakref.WeakSet[redis.Redis] = weakref.WeakSet()


def _url_of(client: redis.Redis) -> str:
    url = _urls.get(id(client))
    if url is not None:
        return url
    cluster = cluster_of(client)
    if cluster is not None:  # no pool of its own: name the nodes it knows
        nodes = cluster.nodes_manager.nodes_cache.values()
        return "redis+cluster://" + ",".join(sorted(n.name for n in nodes)[:3])
    pool = client.connection_pool
    if isinstance(pool, SentinelConnectionPool):
        return f"redis+sentinel://.../{pool.service_name}"
    kwargs = getattr(pool, "connection_kwargs", {})
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host', '?')}:{kwargs.get('port', '?')}/{kwargs.get('db', 0)}"
