"""Which cluster client code talks to: an explicit client, ``BALANCER_REDIS_URL``, or
the embedded in-process cluster when neither is given."""

from __future__ import annotations

import redis

from common.connection import connect
from common.settings import Settings


def resolve(
    client: redis.Redis | None = None, namespace: str | None = None
) -> tuple[redis.Redis, Settings]:
    settings = Settings.from_env(namespace=namespace)
    if client is not None:
        return client, settings
    if settings.redis_url:
        return connect(settings.redis_url), settings
    from balancer import embedded

    return embedded.client(settings), settings
