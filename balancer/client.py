"""Which cluster client code talks to: an explicit client, ``BALANCER_REDIS_URL``, or
the embedded in-process cluster when neither is given.

Settings and connections are resolved once per process and configuration, not per
submit: reading the whole environment and opening a connection cost more than a
one-task flow's submit itself.
"""

from __future__ import annotations

import os
import threading
from dataclasses import fields

import redis

from common.connection import connect
from common.settings import ENV_PREFIX, Settings

_lock = threading.Lock()
_settings: dict[tuple[str | None, ...], Settings] = {}
_clients: dict[str, redis.Redis] = {}
_NAMES = tuple(ENV_PREFIX + f.name.upper() for f in fields(Settings))


def settings(namespace: str | None = None) -> Settings:
    """The settings for this process's environment (validated in full the first time a
    given set of ``BALANCER_*`` values is seen)."""
    key = (namespace, *(os.environ.get(name) for name in _NAMES))
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
        with _lock:
            shared = _clients.get(config.redis_url)
            if shared is None:
                shared = _clients[config.redis_url] = connect(config.redis_url)
        return shared, config
    from balancer import embedded

    return embedded.client(config), config
