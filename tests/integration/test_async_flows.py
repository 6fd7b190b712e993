"""``async def`` flows, as Prefect 2/3 write them: calling one gives a coroutine; in it, an
``async def`` task's call is awaited (``asyncio.gather`` runs several at once), a plain
task's returns its value, ``submit`` gives a future, and sub-flows, retries, return_state
and timeout_seconds work as for a sync flow. Real serve and worker processes."""

from __future__ import annotations

import asyncio
import inspect
from pathlib import Path
from typing import Any

import pytest
import redis

from balancer import FlowRunTimeoutError, TaskFailed, flow
from tests.conftest import Processes
from tests.integration import async_tasks as at

pytestmark = pytest.mark.integration


@pytest.fixture
def workers(procs: Processes, real: redis.Redis, namespace: str) -> None:
    procs.serve_and_worker(real, namespace, "--concurrency", "4")


def test_an_async_flow_gathers_async_tasks_at_once_and_mixes_in_plain_ones(
        workers: None, redis_url: str, namespace: str) -> None:
    """Four tasks that each wait until all four have started: they meet only if the
    gather sent them all before awaiting any."""
    key = f"{namespace}:met"

    @flow(redis_url=redis_url, namespace=namespace)
    async def fan_out(n: int) -> dict[str, Any]:
        met = await asyncio.gather(*[at.meet(redis_url, key, n) for _ in range(n)])
        tens = await asyncio.gather(*[at.tenfold(i) for i in range(3)])
        future = at.tenfold.submit(7)
        return {"met": met, "tens": tens, "plain": at.plus_one(tens[-1]),
                "submitted": future.result(), "sub": await sub_flow(5)}

    @flow(redis_url=redis_url, namespace=namespace)
    async def sub_flow(x: int) -> int:
        return await at.tenfold(x)

    call = fan_out(4)
    assert inspect.iscoroutine(call)
    assert asyncio.run(call) == {"met": [True] * 4, "tens": [0, 10, 20], "plain": 21,
                                 "submitted": 70, "sub": 50}


def test_an_async_flow_s_failures_retries_and_state(workers: None, redis_url: str,
                                                   namespace: str) -> None:
    attempts: list[int] = []

    @flow(redis_url=redis_url, namespace=namespace, retries=1)
    async def fails_once_then_not() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            return await at.refuses(1)  # its TaskFailed fails the attempt
        return await at.tenfold(2)

    state = asyncio.run(fails_once_then_not(return_state=True))
    assert (state.name, state.result(), len(attempts)) == ("Completed", 20, 2)

    @flow(redis_url=redis_url, namespace=namespace)
    async def fails() -> int:
        return await at.refuses(3)

    with pytest.raises(TaskFailed, match="no 3"):
        asyncio.run(fails())


def test_an_async_flow_past_its_timeout_is_cancelled_at_its_await(
        workers: None, redis_url: str, namespace: str) -> None:
    reached: list[str] = []

    @flow(redis_url=redis_url, namespace=namespace, timeout_seconds=0.5)
    async def waits() -> None:
        await asyncio.sleep(600)
        reached.append("after")

    state = asyncio.run(waits(return_state=True))
    assert state.name == "TimedOut" and state.is_failed() and not reached
    with pytest.raises(FlowRunTimeoutError):
        state.result()


def test_a_worker_importing_a_module_that_runs_its_flows_at_import_skips_them(
        procs: Processes, real: redis.Redis, namespace: str) -> None:
    """`asyncio.run(main())` at a module's top level, as a script writes it: the worker's
    import gets an awaitable that does nothing, and the module's tasks run."""
    procs.env["UNGUARDED"] = "1"
    procs.serve_and_worker(real, namespace, "--import", "tests.integration.unguarded_flows",
                           "--concurrency", "1")
    from balancer import Flow
    from tests.integration import unguarded_flows as uf

    with Flow("unguarded") as f:
        doubled = uf.double(21)
        adoubled = uf.adouble(4)
    run = f.submit(real, namespace=namespace)
    assert run.wait(timeout=60) == "completed", run.why()
    assert (run.result(doubled), run.result(adoubled)) == (42, 8)
    [worker] = [p for p in procs.procs
                if Path(p.log_path).name.startswith("worker")]  # type: ignore[attr-defined]
    said = procs.log(worker)
    for name in ("sync_main", "async_main"):
        assert f"flow '{name}': call ignored while a worker imports its module" in said
