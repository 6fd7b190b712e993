"""``from balancer.concurrency.asyncio import concurrency, rate_limit``: Prefect's import
path (``prefect.concurrency.asyncio``) for the ``async with`` form of
``balancer.concurrency`` (the same class, which waits with ``asyncio.sleep`` there) and
``await rate_limit(...)``."""

from balancer.concurrency import arate_limit as rate_limit
from balancer.concurrency import concurrency

__all__ = ["concurrency", "rate_limit"]
