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

from balancer.common.connection import connect
from balancer.common.settings import ENV_PREFIX, Settings

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
        with _lock:
            shared = _clients.get(config.redis_url)
            if shared is None:
                shared = _clients[config.redis_url] = connect(config.redis_url)
        return shared, config
    from balancer import embedded

    return embedded.client(config), config
