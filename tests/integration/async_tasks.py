"""Tasks for tests/integration/test_async_flows.py, which workers import."""

from __future__ import annotations

import asyncio

import redis

from balancer import task


@task
async def meet(url: str, key: str, parties: int) -> bool:
    """Count itself in at ``key``, then wait (up to 60 s) until ``parties`` have: whether
    they all met, which they do only if they ran at once."""
    client = redis.Redis.from_url(url)
    client.incr(key)
    for _ in range(6000):
        if int(client.get(key) or 0) >= parties:
            return True
        await asyncio.sleep(0.01)
    return False


@task
async def tenfold(x: int) -> int:
    await asyncio.sleep(0)
    return 10 * x


@task
def plus_one(x: int) -> int:
    return x + 1


@task(retries=0)
async def refuses(x: int) -> int:
    raise ValueError(f"no {x}")
