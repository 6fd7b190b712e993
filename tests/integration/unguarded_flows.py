"""A module of tasks that calls its flows at import, without ``if __name__ ==
'__main__':`` (with UNGUARDED=1 in its environment, so that only the test's worker does):
a worker importing it for its tasks must skip those calls, a sync flow's and an async
flow's under ``asyncio.run`` alike, and go on to run its tasks
(tests/integration/test_async_flows.py, whose own process imports it without UNGUARDED)."""

from __future__ import annotations

import asyncio
import os

from balancer import flow, task


@task
def double(x: int) -> int:
    return 2 * x


@task
async def adouble(x: int) -> int:
    return 2 * x


@flow
def sync_main() -> int:
    return double(1)


@flow
async def async_main() -> int:
    return await adouble(1)


if os.environ.get("UNGUARDED") == "1":
    sync_main()
    asyncio.run(async_main())
