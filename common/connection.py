"""Open a Redis client from a URL; ``memory://`` names the embedded in-process broker."""

from __future__ import annotations

import threading

import redis

_embedded_lock = threading.Lock()
_embedded_servers: dict[str, object] = {}

MEMORY_SCHEME = "memory://"


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
