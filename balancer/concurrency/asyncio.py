"""``from balancer.concurrency.asyncio import concurrency``: Prefect's import path
(``prefect.concurrency.asyncio``) for the ``async with`` form of ``balancer.concurrency``:
the same class, which waits with ``asyncio.sleep`` there."""

from balancer.concurrency import concurrency

__all__ = ["concurrency"]
